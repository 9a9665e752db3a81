-- Emergency contacts who use the care app: their device registers over the
-- same signalling as elders' devices (a token whose SHA-256 is stored, like
-- elders'), and the no-answer ladder rings it with the contact notice flow.
ALTER TABLE emergency_contacts
    ADD COLUMN device_id TEXT UNIQUE CHECK (device_id ~ '^[A-Za-z0-9._-]{3,64}$'),
    ADD COLUMN device_token_hash BYTEA CHECK (length(device_token_hash) = 32),
    ADD CHECK (device_token_hash IS NULL OR device_id IS NOT NULL);

-- Device ids are one namespace: a device is an elder's or a contact's, never both.
CREATE FUNCTION device_id_one_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.device_id IS NOT NULL AND (
        (TG_TABLE_NAME = 'elders' AND EXISTS (SELECT 1 FROM emergency_contacts WHERE device_id = NEW.device_id)) OR
        (TG_TABLE_NAME = 'emergency_contacts' AND EXISTS (SELECT 1 FROM elders WHERE device_id = NEW.device_id))
    ) THEN
        RAISE EXCEPTION 'device id % is already enrolled', NEW.device_id USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER elders_device_id_one_owner BEFORE INSERT OR UPDATE OF device_id ON elders
    FOR EACH ROW EXECUTE FUNCTION device_id_one_owner();
CREATE TRIGGER contacts_device_id_one_owner BEFORE INSERT OR UPDATE OF device_id ON emergency_contacts
    FOR EACH ROW EXECUTE FUNCTION device_id_one_owner();

-- A check-in whose elder was not reached but whose emergency contact took it on.
ALTER TABLE calls DROP CONSTRAINT calls_outcome_check;
ALTER TABLE calls ADD CONSTRAINT calls_outcome_check CHECK (outcome IN
    ('ok', 'escalated', 'answered_silent', 'not_understood', 'hung_up', 'unreachable', 'interrupted', 'contact_confirmed'));
