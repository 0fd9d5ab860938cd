-- Every change to a subscription, in the order it was made: imports, cancellations,
-- renewals. Rows are only ever added (MergeTree, no replacing), so the history is never
-- overwritten; the subscriptions table holds the state the changes lead to. Read one
-- subscription at a time, so keyed by it.
CREATE TABLE IF NOT EXISTS {db}.subscription_changes
(
    tenant       LowCardinality(String),
    subscription String,
    recorded_at  DateTime64(3, 'UTC'),
    kind         LowCardinality(String),
    effective_at Nullable(DateTime64(3, 'UTC')),
    plan         LowCardinality(String),
    detail       String
)
ENGINE = MergeTree
ORDER BY (tenant, subscription, recorded_at);
