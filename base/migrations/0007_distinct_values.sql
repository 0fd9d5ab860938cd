-- Unique-count meters (distinct users, say) keep the distinct values each rated total has
-- seen, as 8-byte digests, so a restarted worker counts a value seen before the crash
-- once. Written before anything else of a batch (see aggregation/state.py). Keyed like a
-- total plus the digest, so a replayed batch folds into the same rows; partitioned by
-- month like the totals, so a closed period's values can be dropped with it.
CREATE TABLE IF NOT EXISTS {db}.distinct_values
(
    tenant          LowCardinality(String),
    subscription    String,
    meter           LowCardinality(String),
    period_start    Date,
    plan_version    UInt32,
    group_key       String,
    value_digest    FixedString(8),
    kafka_partition UInt32,
    written_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant, subscription, meter, period_start, plan_version, group_key, value_digest);
