-- The plans a subscription moved to and the day each took effect (UTC, in day order),
-- kept on its versioned row so that a worker reading the row learns the whole timeline
-- at once; the history of who changed what stays in subscription_changes.
ALTER TABLE {db}.subscriptions
    ADD COLUMN IF NOT EXISTS change_days Array(Date),
    ADD COLUMN IF NOT EXISTS change_plans Array(String);
