-- The call carries its level: the most severe assessment of any reply in it,
-- with that assessment's reasons. A call whose elder said they were tired is
-- `ok` as an outcome (the check-in went through) and `watch` as a level, and
-- the supervisors' watch list is read from here. Kept by a trigger on the
-- assessments, so the level is written in the same transaction as the
-- assessment that raised it, whichever code path stored it.
ALTER TABLE calls
    ADD COLUMN level TEXT CHECK (level IN ('ok', 'watch', 'urgent', 'emergency')),
    ADD COLUMN level_reasons JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(level_reasons) = 'array');

CREATE FUNCTION level_rank(level TEXT) RETURNS INT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE level WHEN 'emergency' THEN 3 WHEN 'urgent' THEN 2 WHEN 'watch' THEN 1 WHEN 'ok' THEN 0 ELSE -1 END
$$;

CREATE FUNCTION raise_call_level() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls SET level = NEW.level, level_reasons = NEW.reasons
     WHERE id = NEW.call_id AND level_rank(level) < level_rank(NEW.level);
    RETURN NEW;
END
$$;

CREATE TRIGGER distress_assessments_raise_call_level
    AFTER INSERT ON distress_assessments
    FOR EACH ROW EXECUTE FUNCTION raise_call_level();

-- Calls stored before this migration: their most severe assessment.
UPDATE calls c SET level = top.level, level_reasons = top.reasons
  FROM (SELECT DISTINCT ON (call_id) call_id, level, reasons
          FROM distress_assessments
         ORDER BY call_id, level_rank(level) DESC, id) top
 WHERE top.call_id = c.id;

-- The watch list walks an elder's recent calls with a level.
CREATE INDEX calls_elder_level ON calls (elder_id, due_at DESC) WHERE level IS NOT NULL;
