-- A Kafka record may carry a batch of one subscription's events, so an event's position
-- is (partition, offset, index in the record). Marks and totals keep the index for the
-- replay rule (see aggregation/state.py); rejected events need it in their key, or two
-- bad events of one record would fold into one row.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS event_index UInt32 AFTER kafka_offset;
ALTER TABLE {db}.rated_usage ADD COLUMN IF NOT EXISTS event_index UInt32 AFTER kafka_offset;
ALTER TABLE {db}.rejected_events
    ADD COLUMN IF NOT EXISTS event_index UInt32 AFTER kafka_offset,
    MODIFY ORDER BY (kafka_partition, kafka_offset, event_index);
