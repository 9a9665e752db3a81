-- The SIP final status that ended an attempt to a telephone (486, 480, 404,
-- 503…), kept beside the outcome it was read as, so a supervisor can see
-- what the network actually said when the outcome looks wrong. NULL for
-- attempts that got no final failure response (answered, ring timeout, no
-- response from the trunk, care-app devices).
ALTER TABLE call_attempts ADD COLUMN sip_status SMALLINT CHECK (sip_status BETWEEN 300 AND 699);
