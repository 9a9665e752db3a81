-- voicecare schema. Integrity lives here: foreign keys, CHECKs, state-machine
-- triggers and partial unique indexes, so no code path can store a state the
-- product does not know how to handle.

-- ───────────────────────── organisation ─────────────────────────
-- The service covers a city in four levels; staff and elders hang off it.
CREATE TABLE org_units (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id   BIGINT REFERENCES org_units(id),
    level       TEXT NOT NULL CHECK (level IN ('city', 'county', 'street', 'community')),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Ancestor ids from the city down to this unit itself, maintained by a trigger.
    -- "Under unit U" is `U = ANY(path)`: one indexable test for every scope check.
    path        BIGINT[] NOT NULL DEFAULT '{}',
    CHECK ((level = 'city') = (parent_id IS NULL)),
    UNIQUE (parent_id, name)
);
CREATE INDEX org_units_path_gin ON org_units USING gin (path);

CREATE FUNCTION org_unit_rank(lvl TEXT) RETURNS INT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lvl WHEN 'city' THEN 0 WHEN 'county' THEN 1 WHEN 'street' THEN 2 WHEN 'community' THEN 3 END
$$;

CREATE FUNCTION org_units_set_path() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent org_units%ROWTYPE;
BEGIN
    IF NEW.parent_id IS NULL THEN
        NEW.path := ARRAY[NEW.id];
    ELSE
        SELECT * INTO parent FROM org_units WHERE id = NEW.parent_id;
        IF org_unit_rank(NEW.level) <> org_unit_rank(parent.level) + 1 THEN
            RAISE EXCEPTION 'a % cannot sit under a %', NEW.level, parent.level
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.path := parent.path || NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER org_units_path BEFORE INSERT ON org_units
    FOR EACH ROW EXECUTE FUNCTION org_units_set_path();
-- Moving a unit would silently re-scope everyone under it: forbid it.
CREATE FUNCTION org_units_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.parent_id IS DISTINCT FROM OLD.parent_id OR NEW.level <> OLD.level OR NEW.path <> OLD.path THEN
        RAISE EXCEPTION 'org units cannot be moved or re-levelled' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER org_units_frozen BEFORE UPDATE ON org_units
    FOR EACH ROW EXECUTE FUNCTION org_units_freeze();

-- ───────────────────────── elders ─────────────────────────
CREATE TABLE elders (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_ref    TEXT UNIQUE CHECK (length(external_ref) BETWEEN 1 AND 64),
    full_name       TEXT NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
    birth_date      DATE CHECK (birth_date > DATE '1900-01-01'),
    address         TEXT CHECK (length(address) <= 500),
    phone           TEXT UNIQUE CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    device_id       TEXT UNIQUE CHECK (device_id ~ '^[A-Za-z0-9._-]{3,64}$'),
    -- sha256 of the device's secret; the secret itself is never stored.
    device_token_hash BYTEA,
    language        TEXT NOT NULL CHECK (language IN ('zh', 'en')),
    time_zone       TEXT NOT NULL CHECK (length(time_zone) BETWEEN 1 AND 64),
    community_id    BIGINT NOT NULL REFERENCES org_units(id),
    notes           TEXT CHECK (length(notes) <= 2000),
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (phone IS NOT NULL OR device_id IS NOT NULL)
);
CREATE INDEX elders_community ON elders (community_id);

CREATE FUNCTION elders_check_community() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT level FROM org_units WHERE id = NEW.community_id) <> 'community' THEN
        RAISE EXCEPTION 'elders belong to a community, not a higher unit' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER elders_community_level BEFORE INSERT OR UPDATE OF community_id ON elders
    FOR EACH ROW EXECUTE FUNCTION elders_check_community();

CREATE TABLE emergency_contacts (
    elder_id    BIGINT NOT NULL REFERENCES elders(id),
    position    SMALLINT NOT NULL CHECK (position BETWEEN 1 AND 9),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    relation    TEXT CHECK (length(relation) <= 50),
    phone       TEXT NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    PRIMARY KEY (elder_id, position)
);

-- ───────────────────────── schedules ─────────────────────────
CREATE TABLE checkin_schedules (
    elder_id        BIGINT PRIMARY KEY REFERENCES elders(id),
    -- Local wall-clock window in the elder's time zone; may cross midnight.
    window_start    TIME NOT NULL,
    window_end      TIME NOT NULL CHECK (window_end <> window_start),
    -- Bit 0 = Monday … bit 6 = Sunday.
    days_of_week    SMALLINT NOT NULL DEFAULT 127 CHECK (days_of_week BETWEEN 1 AND 127),
    max_attempts    SMALLINT NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10),
    retry_minutes   SMALLINT NOT NULL DEFAULT 10 CHECK (retry_minutes BETWEEN 1 AND 240),
    call_contacts   BOOLEAN NOT NULL DEFAULT TRUE,
    flow            TEXT NOT NULL DEFAULT 'daily-checkin' CHECK (flow ~ '^[a-z0-9-]{1,64}$'),
    next_due_at     TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX checkin_schedules_due ON checkin_schedules (next_due_at) WHERE next_due_at IS NOT NULL;

CREATE TABLE schedule_pauses (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    elder_id    BIGINT NOT NULL REFERENCES elders(id),
    starts_on   DATE NOT NULL,
    ends_on     DATE NOT NULL,
    reason      TEXT NOT NULL CHECK (reason IN ('hospital', 'away', 'other')),
    CHECK (ends_on >= starts_on)
);
CREATE INDEX schedule_pauses_elder ON schedule_pauses (elder_id, ends_on);

-- ───────────────────────── calls ─────────────────────────
-- A call is one logical contact (today's check-in, a dial-in, a callback);
-- each ring of a phone is an attempt.
CREATE TABLE calls (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    elder_id        BIGINT NOT NULL REFERENCES elders(id),
    direction       TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    purpose         TEXT NOT NULL CHECK (purpose IN ('checkin', 'help', 'callback')),
    status          TEXT NOT NULL DEFAULT 'scheduled'
                    CHECK (status IN ('scheduled', 'in_progress', 'completed', 'unreachable', 'interrupted', 'cancelled')),
    -- How it ended, for reports: ok, escalated, answered_silent, not_understood, hung_up, unreachable.
    outcome         TEXT CHECK (outcome IN ('ok', 'escalated', 'answered_silent', 'not_understood', 'hung_up', 'unreachable', 'interrupted')),
    flow            TEXT CHECK (length(flow) <= 64),
    flow_path       TEXT[] NOT NULL DEFAULT '{}',
    due_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Which engine node holds the call, until when. An expired lease means the node died.
    node_id         TEXT CHECK (length(node_id) <= 64),
    lease_expires_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ,
    CHECK ((status = 'in_progress') = (node_id IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((status IN ('completed', 'unreachable', 'interrupted', 'cancelled')) = (ended_at IS NOT NULL))
);
CREATE INDEX calls_due ON calls (due_at, id) WHERE status = 'scheduled';
CREATE INDEX calls_lease ON calls (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX calls_elder ON calls (elder_id, created_at DESC);
-- One live check-in per elder at a time: two engine nodes can never ring the same elder for the same check-in.
CREATE UNIQUE INDEX calls_one_live_checkin ON calls (elder_id)
    WHERE purpose = 'checkin' AND status IN ('scheduled', 'in_progress');

CREATE FUNCTION calls_guard_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'scheduled'   AND NEW.status IN ('in_progress', 'cancelled', 'unreachable')) OR
        (OLD.status = 'in_progress' AND NEW.status IN ('scheduled', 'completed', 'unreachable', 'interrupted')) OR
        (OLD.status = 'interrupted' AND NEW.status = 'scheduled')
    ) THEN
        RAISE EXCEPTION 'call % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER calls_transition BEFORE UPDATE OF status ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_guard_transition();

CREATE TABLE call_attempts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         BIGINT NOT NULL REFERENCES calls(id),
    attempt_no      SMALLINT NOT NULL CHECK (attempt_no BETWEEN 1 AND 50),
    -- Who was rung: the elder, or an emergency contact in ladder order.
    callee          TEXT NOT NULL DEFAULT 'elder' CHECK (callee IN ('elder', 'contact')),
    contact_position SMALLINT CHECK (contact_position BETWEEN 1 AND 9),
    status          TEXT NOT NULL DEFAULT 'dialing'
                    CHECK (status IN ('dialing', 'ringing', 'answered', 'ended', 'no_answer', 'busy', 'failed', 'interrupted')),
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    answered_at     TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ,
    end_reason      TEXT CHECK (length(end_reason) <= 200),
    UNIQUE (call_id, attempt_no),
    CHECK ((callee = 'contact') = (contact_position IS NOT NULL))
);

CREATE FUNCTION attempts_guard_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'dialing'  AND NEW.status IN ('ringing', 'answered', 'no_answer', 'busy', 'failed', 'interrupted')) OR
        (OLD.status = 'ringing'  AND NEW.status IN ('answered', 'no_answer', 'busy', 'failed', 'interrupted')) OR
        (OLD.status = 'answered' AND NEW.status IN ('ended', 'interrupted'))
    ) THEN
        RAISE EXCEPTION 'call attempt % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER call_attempts_transition BEFORE UPDATE OF status ON call_attempts
    FOR EACH ROW EXECUTE FUNCTION attempts_guard_transition();

CREATE TABLE utterances (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         BIGINT NOT NULL REFERENCES calls(id),
    attempt_id      BIGINT REFERENCES call_attempts(id),
    seq             INT NOT NULL CHECK (seq >= 0),
    speaker         TEXT NOT NULL DEFAULT 'elder' CHECK (speaker IN ('elder', 'operator', 'engine')),
    flow_step       TEXT CHECK (length(flow_step) <= 64),
    transcript      TEXT NOT NULL CHECK (length(transcript) <= 10000),
    language        TEXT CHECK (language IN ('zh', 'en')),
    confidence      REAL CHECK (confidence BETWEEN 0 AND 1),
    audio_path      TEXT CHECK (length(audio_path) <= 500),
    audio_ms        INT CHECK (audio_ms >= 0),
    asr_queue_ms    INT CHECK (asr_queue_ms >= 0),
    asr_decode_ms   INT CHECK (asr_decode_ms >= 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (call_id, seq)
);

CREATE TABLE distress_assessments (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         BIGINT NOT NULL REFERENCES calls(id),
    utterance_id    BIGINT REFERENCES utterances(id),
    level           TEXT NOT NULL CHECK (level IN ('ok', 'watch', 'urgent', 'emergency')),
    categories      TEXT[] NOT NULL DEFAULT '{}',
    -- [{category, evidence, rule, span?}, …] as the classifier wrote them.
    reasons         JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(reasons) = 'array'),
    score           REAL NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX distress_assessments_call ON distress_assessments (call_id);

-- ───────────────────────── operators ─────────────────────────
CREATE TABLE operators (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9._-]{2,64}$'),
    display_name    TEXT NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    password_hash   TEXT NOT NULL CHECK (password_hash LIKE '$argon2%'),
    role            TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
    unit_id         BIGINT NOT NULL REFERENCES org_units(id),
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    -- sha256 of the bearer token: a leaked table does not leak live sessions.
    token_hash      BYTEA PRIMARY KEY,
    operator_id     BIGINT NOT NULL REFERENCES operators(id),
    csrf_token      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ
);
CREATE INDEX sessions_operator ON sessions (operator_id);

-- ───────────────────────── escalation queue ─────────────────────────
CREATE TABLE escalations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         BIGINT NOT NULL REFERENCES calls(id),
    elder_id        BIGINT NOT NULL REFERENCES elders(id),
    level           TEXT NOT NULL CHECK (level IN ('watch', 'urgent', 'emergency')),
    priority        SMALLINT GENERATED ALWAYS AS (
                        CASE level WHEN 'emergency' THEN 3 WHEN 'urgent' THEN 2 ELSE 1 END) STORED,
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'claimed', 'resolved')),
    categories      TEXT[] NOT NULL DEFAULT '{}',
    reasons         JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(reasons) = 'array'),
    -- The elder is still on the line waiting for a person.
    elder_on_line   BOOLEAN NOT NULL DEFAULT FALSE,
    -- The elder's community path (see org_units.path), kept by triggers. Scope
    -- checks test it row by row inside the ordered queue scan, so "take next"
    -- stays an index walk however many elders a unit covers.
    unit_path       BIGINT[] NOT NULL DEFAULT '{}',
    -- Original age: never changed by claims, releases, lease expiry or level raises.
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sla_deadline    TIMESTAMPTZ NOT NULL,
    first_claimed_at TIMESTAMPTZ,
    claimed_by      BIGINT REFERENCES operators(id),
    claimed_at      TIMESTAMPTZ,
    lease_expires_at TIMESTAMPTZ,
    resolved_by     BIGINT REFERENCES operators(id),
    resolved_at     TIMESTAMPTZ,
    outcome         TEXT CHECK (outcome IN ('no_action', 'called_back', 'contacted_family',
                                            'dispatched_emergency_services', 'welfare_visit', 'false_alarm')),
    resolution_notes TEXT CHECK (length(resolution_notes) <= 4000),
    version         INT NOT NULL DEFAULT 1,
    CHECK ((status = 'claimed') = (claimed_by IS NOT NULL AND lease_expires_at IS NOT NULL AND claimed_at IS NOT NULL)),
    CHECK ((status = 'resolved') = (outcome IS NOT NULL AND resolved_at IS NOT NULL AND resolved_by IS NOT NULL))
);
-- Exactly one open escalation per call; a second flag raises the level of this one.
CREATE UNIQUE INDEX escalations_one_open_per_call ON escalations (call_id) WHERE status <> 'resolved';
-- Matches the queue's ORDER BY so "take next" is an index scan.
CREATE INDEX escalations_queue ON escalations (priority DESC, created_at, id) WHERE status = 'open';
CREATE INDEX escalations_lease ON escalations (lease_expires_at) WHERE status = 'claimed';
CREATE INDEX escalations_elder ON escalations (elder_id, created_at DESC);

CREATE FUNCTION escalations_set_unit_path() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT u.path INTO NEW.unit_path FROM elders el JOIN org_units u ON u.id = el.community_id
    WHERE el.id = NEW.elder_id;
    RETURN NEW;
END $$;
CREATE TRIGGER escalations_unit_path BEFORE INSERT ON escalations
    FOR EACH ROW EXECUTE FUNCTION escalations_set_unit_path();
-- An elder who moves community takes their items to the new unit's operators.
CREATE FUNCTION elders_move_escalations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE escalations SET unit_path = (SELECT path FROM org_units WHERE id = NEW.community_id)
    WHERE elder_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER elders_moved AFTER UPDATE OF community_id ON elders
    FOR EACH ROW WHEN (OLD.community_id IS DISTINCT FROM NEW.community_id)
    EXECUTE FUNCTION elders_move_escalations();

CREATE TABLE escalation_notes (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    escalation_id   BIGINT NOT NULL REFERENCES escalations(id),
    operator_id     BIGINT NOT NULL REFERENCES operators(id),
    body            TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX escalation_notes_escalation ON escalation_notes (escalation_id);

-- ───────────────────────── audit ─────────────────────────
CREATE TABLE audit_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_kind      TEXT NOT NULL CHECK (actor_kind IN ('operator', 'engine', 'system')),
    actor_id        BIGINT REFERENCES operators(id),
    action          TEXT NOT NULL CHECK (action ~ '^[a-z_.]{2,64}$'),
    entity          TEXT NOT NULL CHECK (entity IN ('escalation', 'elder', 'call', 'operator', 'session', 'utterance')),
    entity_id       BIGINT,
    elder_id        BIGINT REFERENCES elders(id),
    details         JSONB NOT NULL DEFAULT '{}',
    CHECK ((actor_kind = 'operator') = (actor_id IS NOT NULL))
);
CREATE INDEX audit_events_entity ON audit_events (entity, entity_id, at);

-- Audit rows and escalations are never deleted; audit rows are never changed.
CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: this table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER escalations_never_deleted BEFORE DELETE ON escalations
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Announce every new or changed escalation; delivered at commit, so a listener
-- never sees an escalation that then rolls back.
CREATE FUNCTION escalations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voicecare_escalations', json_build_object(
        'id', NEW.id, 'level', NEW.level, 'status', NEW.status, 'version', NEW.version,
        'op', lower(TG_OP))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER escalations_announce AFTER INSERT OR UPDATE ON escalations
    FOR EACH ROW EXECUTE FUNCTION escalations_notify();
