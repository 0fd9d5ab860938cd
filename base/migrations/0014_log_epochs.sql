-- Positions know their log (aggregation/log_identity.py): every stored position gains
-- the epoch of the partition's log it came from, and positions order by epoch first, so
-- events of a recreated topic or a restarted memory broker are never taken for replays.
-- Rows written before this migration belong to epoch 0.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_partition;

-- A rejection's row is keyed by its position: the epoch joins the key (a sorting key
-- grows only by a column added in the same ALTER, without a default).
ALTER TABLE {db}.rejected_events
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 AFTER kafka_partition,
    MODIFY ORDER BY (kafka_partition, kafka_offset, event_index, log_epoch);

-- A rated total's row version was its Kafka offset, which starts over in a new log, so
-- the new log's totals would lose to the old one's. The version becomes the position's
-- ordinal (epoch above bit 64, offset below). ClickHouse cannot change a table's
-- version column in place: the rows move to a table made for it, which takes the name.
ALTER TABLE {db}.rated_usage
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_partition,
    ADD COLUMN IF NOT EXISTS log_position UInt128
        DEFAULT bitOr(bitShiftLeft(toUInt128(log_epoch), 64), toUInt128(kafka_offset));
CREATE TABLE IF NOT EXISTS {db}.rated_usage_by_position AS {db}.rated_usage
ENGINE = ReplacingMergeTree(log_position)
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant, period_start, subscription, meter, plan_version, group_key, plan_key);
INSERT INTO {db}.rated_usage_by_position SELECT * FROM {db}.rated_usage;
RENAME TABLE {db}.rated_usage TO {db}.rated_usage_by_offset,
    {db}.rated_usage_by_position TO {db}.rated_usage;
DROP TABLE {db}.rated_usage_by_offset;

-- Per partition, the last record whose effects are durable: its offset in its log and a
-- fingerprint of the record, so a worker can tell whether the log it reads now is the
-- same one. The newest position wins.
CREATE TABLE IF NOT EXISTS {db}.log_checkpoints
(
    topic           LowCardinality(String),
    kafka_partition UInt32,
    log_epoch       UInt32,
    kafka_offset    UInt64,
    fingerprint     FixedString(16),
    log_position    UInt128
        DEFAULT bitOr(bitShiftLeft(toUInt128(log_epoch), 64), toUInt128(kafka_offset)),
    written_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(log_position)
ORDER BY (topic, kafka_partition);

-- Every new log a worker found, with the evidence: never rewritten.
CREATE TABLE IF NOT EXISTS {db}.log_incarnations
(
    topic           LowCardinality(String),
    kafka_partition UInt32,
    log_epoch       UInt32,
    previous_offset UInt64,
    reason          String,
    found_at        DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, kafka_partition, log_epoch);
