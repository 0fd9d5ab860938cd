-- Subscriptions: which plan each subscription is on. Versioned rows, latest wins
-- (ReplacingMergeTree); read with FINAL. Keyed for point lookups by subscription.
CREATE TABLE IF NOT EXISTS {db}.subscriptions
(
    tenant       LowCardinality(String),
    subscription String,
    customer     String,
    plan         LowCardinality(String),
    started_at   DateTime64(3, 'UTC'),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, subscription);

-- The audit trail: every distinct accepted event, once. A replayed batch writes the
-- same rows again and ReplacingMergeTree folds them on the sorting key. Partitioned by
-- month of usage so a period's events live together; the dedupe marks a worker
-- reloads on start are (dedupe_key, kafka_partition, kafka_offset).
CREATE TABLE IF NOT EXISTS {db}.events
(
    tenant          LowCardinality(String),
    subscription    String,
    meter           LowCardinality(String),
    source          LowCardinality(String),
    event_id        String CODEC(ZSTD(3)),
    quantity        Int64,
    timestamp       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    dedupe_key      FixedString(16),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant, subscription, meter, dedupe_key);

-- Rated period-to-date totals, one logical row per (tenant, period, subscription, meter),
-- written as versioned upserts: the version is the Kafka offset of the last event the
-- total absorbed, which only grows for a key, so a replay rewrites the same answer.
-- Sorted by period first: closing a period reads all of its subscriptions.
CREATE TABLE IF NOT EXISTS {db}.rated_usage
(
    tenant          LowCardinality(String),
    subscription    String,
    meter           LowCardinality(String),
    period_start    Date,
    plan            LowCardinality(String),
    currency        LowCardinality(String),
    quantity        Int64,
    amount          Decimal(38, 9),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant, period_start, subscription, meter);

-- Events that could not be billed, with a machine-readable reason: never a silent drop.
CREATE TABLE IF NOT EXISTS {db}.rejected_events
(
    kafka_partition UInt32,
    kafka_offset    UInt64,
    reason          LowCardinality(String),
    detail          String,
    payload         String CODEC(ZSTD(3)),
    rejected_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (kafka_partition, kafka_offset);
