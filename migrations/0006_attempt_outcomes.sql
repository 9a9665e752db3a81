-- What each attempt came to (docs/telephony.md, "Failures"): from the SIP
-- final response and its Q.850 cause, the device signalling, or, later,
-- what was heard on answer. NULL for attempts still ringing, interrupted,
-- or made before this column existed.
ALTER TABLE call_attempts ADD COLUMN outcome TEXT CHECK (outcome IN
    ('answered', 'voicemail', 'busy', 'no_answer', 'declined', 'invalid_number',
     'switched_off', 'codec_mismatch', 'trunk_failure', 'device_offline', 'failed'));
CREATE INDEX call_attempts_outcome_started ON call_attempts (started_at) WHERE outcome IS NOT NULL;

-- Enrolments an administrator must correct: today, an elder's telephone
-- number that the network says does not exist. One open task per elder and
-- kind; a later failure of the same kind adds to it. Changing the elder's
-- number closes it (trigger below), with its audit event.
CREATE TABLE enrolment_tasks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    elder_id        BIGINT NOT NULL REFERENCES elders(id),
    kind            TEXT NOT NULL CHECK (kind IN ('fix_phone')),
    -- The outcome that raised it, e.g. 'invalid_number'.
    outcome         TEXT NOT NULL CHECK (length(outcome) <= 32),
    -- The first and latest attempts that failed this way.
    first_attempt_id BIGINT REFERENCES call_attempts(id),
    last_attempt_id BIGINT REFERENCES call_attempts(id),
    occurrences     INT NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    created_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    resolution      TEXT CHECK (length(resolution) <= 200),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
CREATE UNIQUE INDEX enrolment_tasks_one_open ON enrolment_tasks (elder_id, kind) WHERE resolved_at IS NULL;

CREATE FUNCTION enrolment_tasks_phone_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.phone IS DISTINCT FROM OLD.phone THEN
        WITH closed AS (
            UPDATE enrolment_tasks SET resolved_at = now(), resolution = 'telephone number changed'
            WHERE elder_id = NEW.id AND kind = 'fix_phone' AND resolved_at IS NULL
            RETURNING id
        )
        INSERT INTO audit_events (at, actor_kind, action, entity, entity_id, elder_id, details)
        SELECT now(), 'system', 'enrolment_task.resolve', 'elder', NEW.id, NEW.id,
               jsonb_build_object('task_id', closed.id, 'resolution', 'telephone number changed')
        FROM closed;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER elders_phone_changed AFTER UPDATE OF phone ON elders
    FOR EACH ROW EXECUTE FUNCTION enrolment_tasks_phone_changed();
