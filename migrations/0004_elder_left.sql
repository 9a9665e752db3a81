-- `elder_on_line` says the flow kept the elder on the line for a person; this
-- says when they were no longer there (hung up, or the conversation ended),
-- after which consoles offer a call back instead of joining.
ALTER TABLE escalations ADD COLUMN elder_left_at TIMESTAMPTZ;
