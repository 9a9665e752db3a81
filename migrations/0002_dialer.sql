-- The dialer: what the call runner keeps between the attempts of one call.

-- The no-answer ladder of a check-in (voicecare_core::schedule::Ladder and the
-- next step it asked for), stored while the call waits for its next attempt.
ALTER TABLE calls ADD COLUMN ladder JSONB CHECK (ladder IS NULL OR jsonb_typeof(ladder) = 'object');

-- A rescheduled call points at the call it replaces (interrupted by a node that died).
ALTER TABLE calls ADD COLUMN replaces BIGINT REFERENCES calls(id);
CREATE UNIQUE INDEX calls_replaces ON calls (replaces) WHERE replaces IS NOT NULL;

-- Counting the calls a node holds (the per-node cap).
CREATE INDEX calls_in_progress_node ON calls (node_id) WHERE status = 'in_progress';
