-- Usage alerts (aggregation/alerts.py): rules per subscription or plan, and each crossing
-- the worker found, one row per crossing id (a digest of tenant, subscription, rule, rule
-- version and period), written before the batch's totals so a replay finds it again.
CREATE TABLE IF NOT EXISTS {db}.alert_rules
(
    tenant     LowCardinality(String),
    rule_id    String,
    scope      LowCardinality(String),
    target     String,
    metric     LowCardinality(String),
    meter      String,
    feature    String,
    threshold  Decimal(38, 9),
    removed    Bool,
    created_at DateTime64(3, 'UTC'),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, rule_id);

CREATE TABLE IF NOT EXISTS {db}.alert_crossings
(
    tenant          LowCardinality(String),
    crossing_id     String,
    subscription    String,
    rule_id         String,
    rule_version    UInt64,
    period_start    Date,
    metric          LowCardinality(String),
    threshold       Decimal(38, 9),
    value           Decimal(38, 9),
    crossed_at      DateTime64(3, 'UTC'),
    kafka_partition UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, crossing_id);
