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

-- A lease renewal changes nothing another console shows, but every notice
-- makes every console in scope reload its queue: a floor of 200 operators
-- each renewing every few seconds would have reloaded thousands of times a
-- second. Announce inserts, and updates that change more than the lease.
DROP TRIGGER escalations_announce ON escalations;
CREATE TRIGGER escalations_announce AFTER INSERT ON escalations
    FOR EACH ROW EXECUTE FUNCTION escalations_notify();
CREATE TRIGGER escalations_announce_change AFTER UPDATE ON escalations
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'lease_expires_at') IS DISTINCT FROM (to_jsonb(NEW) - 'lease_expires_at'))
    EXECUTE FUNCTION escalations_notify();
