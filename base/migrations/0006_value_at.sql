-- A meter that bills its latest value (a gauge, such as seats) needs to know when that
-- value was measured, to tell a later event from a late one after a restart.
ALTER TABLE {db}.rated_usage ADD COLUMN IF NOT EXISTS value_at Int64 AFTER quantity;
