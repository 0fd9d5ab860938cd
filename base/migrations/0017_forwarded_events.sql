-- Events that reached another partition than their subscription's (a producer whose
-- partitioner is not Kafka's Java default), forwarded to that partition and billed there:
-- one row per position, so that reconciliation accounts for every event of the record
-- that held them. A replayed batch forwards again and writes the same rows; the copy sent
-- twice is a duplicate at home.
CREATE TABLE IF NOT EXISTS {db}.forwarded_events
(
    tenant          LowCardinality(String),
    subscription    String,
    meter           LowCardinality(String),
    source          LowCardinality(String),
    event_id        String CODEC(ZSTD(3)),
    timestamp       DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    log_epoch       UInt32,
    kafka_offset    UInt64,
    event_index     UInt32,
    record_events   UInt32,
    home_partition  UInt32,
    forwarded_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (kafka_partition, log_epoch, kafka_offset, event_index);
