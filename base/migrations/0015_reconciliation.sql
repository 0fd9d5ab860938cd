-- Reconciliation (meterline reconcile): every event of every record is accounted for
-- once, as billed (events), a duplicate (duplicate_events) or dead-lettered
-- (rejected_events), and each of those rows says how many events its record held, so a
-- record that lost an event shows as incomplete. Rows written before this migration
-- count as records of one event.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS record_events UInt32 DEFAULT 1;
ALTER TABLE {db}.rejected_events
    ADD COLUMN IF NOT EXISTS record_events UInt32 DEFAULT 1,
    ADD COLUMN IF NOT EXISTS tenant LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS subscription String DEFAULT '',
    ADD COLUMN IF NOT EXISTS timestamp Nullable(DateTime64(3, 'UTC'));

-- Events dropped as duplicates, one row per position: a replayed batch writes the same
-- rows again and ReplacingMergeTree folds them.
CREATE TABLE IF NOT EXISTS {db}.duplicate_events
(
    tenant          LowCardinality(String),
    subscription    String,
    meter           LowCardinality(String),
    source          LowCardinality(String),
    event_id        String CODEC(ZSTD(3)),
    timestamp       DateTime64(3, 'UTC'),
    dedupe_key      FixedString(16),
    kafka_partition UInt32,
    log_epoch       UInt32,
    kafka_offset    UInt64,
    event_index     UInt32,
    record_events   UInt32,
    detected_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (kafka_partition, log_epoch, kafka_offset, event_index);
