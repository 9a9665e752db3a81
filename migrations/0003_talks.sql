-- Live talk: an operator's browser leg bridged with the elder's leg, either by
-- joining a call that kept the elder on the line or by calling the elder back.

CREATE TABLE operator_talks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    escalation_id   BIGINT NOT NULL REFERENCES escalations(id),
    -- The call whose elder leg was bridged: the held call, or the call-back call.
    call_id         BIGINT NOT NULL REFERENCES calls(id),
    operator_id     BIGINT NOT NULL REFERENCES operators(id),
    kind            TEXT NOT NULL CHECK (kind IN ('join', 'callback')),
    node_id         TEXT NOT NULL CHECK (length(node_id) <= 64),
    status          TEXT NOT NULL CHECK (status IN ('ringing', 'live', 'ended', 'failed')),
    started_at      TIMESTAMPTZ NOT NULL,
    bridged_at      TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ,
    -- Who left first: the elder, the operator, or the engine (lease lost, media failed, no answer).
    ended_by        TEXT CHECK (ended_by IN ('elder', 'operator', 'engine')),
    end_reason      TEXT CHECK (length(end_reason) <= 200),
    -- Stereo WAV under the data directory (left: elder, right: operator).
    recording_path  TEXT CHECK (length(recording_path) <= 500),
    recording_ms    INT CHECK (recording_ms >= 0),
    CHECK ((status IN ('ended', 'failed')) = (ended_at IS NOT NULL AND ended_by IS NOT NULL)),
    CHECK ((status = 'live') <= (bridged_at IS NOT NULL)),
    CHECK (kind = 'callback' OR status <> 'ringing')
);
CREATE INDEX operator_talks_escalation ON operator_talks (escalation_id, started_at);
-- One live conversation per call.
CREATE UNIQUE INDEX operator_talks_one_live ON operator_talks (call_id) WHERE status IN ('ringing', 'live');

CREATE FUNCTION operator_talks_guard_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'ringing' AND NEW.status IN ('live', 'failed')) OR
        (OLD.status = 'live'    AND NEW.status = 'ended')
    ) THEN
        RAISE EXCEPTION 'operator talk % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER operator_talks_transition BEFORE UPDATE OF status ON operator_talks
    FOR EACH ROW EXECUTE FUNCTION operator_talks_guard_transition();
