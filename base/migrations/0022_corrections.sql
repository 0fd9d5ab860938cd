-- Corrections of closed periods (issue 21): events backfilled into them and events
-- retracted from them. Each correction has a journal row, written first as "pending"
-- with everything the commit needs (its plan), and rewritten as "committed" once every
-- effect is stored. What a correction adds or takes away counts only once it is
-- committed (billable_events); a commit cut short is finished from its plan.
CREATE TABLE IF NOT EXISTS {db}.corrections
(
    tenant       LowCardinality(String),
    correction   String,
    kind         LowCardinality(String),
    status       LowCardinality(String),
    requested_by String,
    reason       String,
    plan         String CODEC(ZSTD(3)),
    created_at   DateTime64(3, 'UTC'),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, correction);

-- An event a backfill stored names its correction; the pipeline's own rows have "".
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS correction String DEFAULT '';

-- Retracted events stay in the events table (the audit trail); this says who took each
-- back, why, and by which correction.
CREATE TABLE IF NOT EXISTS {db}.retracted_events
(
    tenant       LowCardinality(String),
    subscription String,
    meter        LowCardinality(String),
    dedupe_key   FixedString(16),
    event_id     String,
    quantity     Int64,
    timestamp    DateTime64(3, 'UTC'),
    correction   String,
    retracted_by String,
    reason       String,
    retracted_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, subscription, meter, dedupe_key);

-- The events that are billed: the deduplicated audit trail, with committed backfills and
-- without committed retractions. Every reader of usage reads this.
CREATE OR REPLACE VIEW {db}.billable_events AS
SELECT *
FROM {db}.events FINAL
WHERE (correction = ''
       OR correction IN (SELECT correction FROM {db}.corrections FINAL WHERE status = 'committed'))
  AND (tenant, subscription, meter, dedupe_key) NOT IN (
      SELECT tenant, subscription, meter, dedupe_key FROM {db}.retracted_events FINAL
      WHERE correction IN (SELECT correction FROM {db}.corrections FINAL WHERE status = 'committed'));

CREATE OR REPLACE VIEW {db}.usage_hourly AS
SELECT tenant, subscription, meter, toStartOfHour(timestamp) AS window_start,
       count() AS events, sum(quantity) AS quantity
FROM {db}.billable_events
GROUP BY tenant, subscription, meter, window_start;

CREATE OR REPLACE VIEW {db}.usage_daily AS
SELECT tenant, meter, toDate(timestamp) AS day, count() AS events,
       uniqExact(subscription) AS subscriptions, sum(quantity) AS quantity
FROM {db}.billable_events
GROUP BY tenant, meter, day;

-- A credit note a correction issued names it, and says by how much each line's quantity
-- went down: a later close counts both as billed, so the difference is billed once.
ALTER TABLE {db}.credit_notes ADD COLUMN IF NOT EXISTS correction String DEFAULT '';
ALTER TABLE {db}.credit_note_lines ADD COLUMN IF NOT EXISTS quantity Decimal(38, 9) DEFAULT 0;
