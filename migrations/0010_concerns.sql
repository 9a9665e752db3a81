-- What a check-in remembers of an elder (voicecare_core::memory): each
-- watch- or urgent-level finding opens a concern, or is a new mention of the
-- open one it repeats; follow-up answers add mentions; "better" closes it.
-- Rows are written in the transaction that stores the reply that raised
-- them, with their audit events. The words naming what is wrong (`slot`,
-- "膝盖", "knee") are the elder's own, from the finding's clause.
CREATE TABLE concerns (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    elder_id        BIGINT NOT NULL REFERENCES elders(id),
    category        TEXT NOT NULL CHECK (category ~ '^[a-z_]{2,32}$'),
    slot            TEXT CHECK (length(slot) BETWEEN 1 AND 32),
    level           TEXT NOT NULL CHECK (level IN ('watch', 'urgent')),
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at       TIMESTAMPTZ NOT NULL,
    closed_at       TIMESTAMPTZ,
    -- The elder said it was better, or a member of staff closed it.
    closed_by       TEXT CHECK (closed_by IN ('elder', 'staff')),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL AND closed_by IS NOT NULL))
);
CREATE INDEX concerns_open ON concerns (elder_id) WHERE status = 'open';

CREATE TABLE concern_mentions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    concern_id      BIGINT NOT NULL REFERENCES concerns(id),
    call_id         BIGINT REFERENCES calls(id),
    -- The elder's local date of the call.
    on_date         DATE NOT NULL,
    change          TEXT NOT NULL CHECK (change IN ('new', 'better', 'same', 'worse', 'unclear')),
    at              TIMESTAMPTZ NOT NULL
);
-- One word per call on each concern, however often the reply repeats it
-- (and however often a spooled write is replayed).
CREATE UNIQUE INDEX concern_mentions_once_per_call ON concern_mentions (concern_id, call_id);
CREATE INDEX concern_mentions_concern ON concern_mentions (concern_id, on_date);
