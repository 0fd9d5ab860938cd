-- A meter may group usage by event properties (region, model, ...), and a charge is then
-- rated per group, so the group joins the key of a rated total: a JSON object of the
-- meter's group-by properties, "" for a meter without groups. Events keep their
-- properties (JSON) in the audit trail.
ALTER TABLE {db}.rated_usage
    ADD COLUMN IF NOT EXISTS group_key String AFTER meter,
    MODIFY ORDER BY (tenant, period_start, subscription, meter, plan_version, group_key);
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS properties String CODEC(ZSTD(3)) AFTER quantity;
