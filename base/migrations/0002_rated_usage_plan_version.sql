-- A period's usage is split where a new plan version takes effect, and each slice is
-- rated on its own, so the plan version joins the key of a rated total. ClickHouse
-- lets a sorting key grow only by columns added in the same ALTER, with no default:
-- rows written before this migration read as version 0, and none exist outside tests.
ALTER TABLE {db}.rated_usage
    ADD COLUMN IF NOT EXISTS plan_version UInt32 AFTER plan,
    MODIFY ORDER BY (tenant, period_start, subscription, meter, plan_version);
