-- Escalation notices carry the item's unit path, so a node fanning them out
-- to consoles can check each reader's scope without a query per reader per
-- event (with 200 consoles open, that was 200 queries for every change).
-- The path is read by the node only; consoles are sent ids and levels.
CREATE OR REPLACE FUNCTION escalations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voicecare_escalations', json_build_object(
        'id', NEW.id, 'level', NEW.level, 'status', NEW.status, 'version', NEW.version,
        'op', lower(TG_OP), 'unit_path', NEW.unit_path)::text);
    RETURN NULL;
END $$;
