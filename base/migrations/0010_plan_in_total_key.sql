-- A subscription may change plan inside a period, and each plan's usage is a total of its
-- own, so the plan joins the key of rated totals and of distinct values. The plan column
-- exists already, but ClickHouse lets a sorting key grow only by a column added in the
-- same ALTER, with no default: plan_key repeats the plan for the key. Rows written before
-- this migration read plan_key as ""; none exist outside tests.
ALTER TABLE {db}.rated_usage
    ADD COLUMN IF NOT EXISTS plan_key String AFTER plan_version,
    MODIFY ORDER BY (tenant, period_start, subscription, meter, plan_version, group_key, plan_key);
ALTER TABLE {db}.distinct_values
    ADD COLUMN IF NOT EXISTS plan_key String AFTER period_start,
    MODIFY ORDER BY (tenant, subscription, meter, period_start, plan_version, group_key, value_digest, plan_key);
