-- When each plan change takes effect, to the millisecond (UTC): the midnight of its day,
-- or the second an immediate change was made for. Rows written before this migration
-- have none, and their changes take effect at the midnight of change_days.
ALTER TABLE {db}.subscriptions
    ADD COLUMN IF NOT EXISTS change_moments Array(DateTime64(3, 'UTC')) AFTER change_plans;
