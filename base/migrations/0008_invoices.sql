-- Customers: who pays, under which name and external (CRM) id, at what tax rate (percent).
-- Versioned rows, latest wins (ReplacingMergeTree, read with FINAL); a tenant's customers
-- are read together when its invoices are closed, so the key leads with the tenant.
CREATE TABLE IF NOT EXISTS {db}.customers
(
    tenant      LowCardinality(String),
    customer    String,
    name        String,
    external_id String,
    tax_rate    Decimal(9, 4),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, customer);

-- A subscription may end (exclusive): fixed fees are prorated to the day it ends.
ALTER TABLE {db}.subscriptions ADD COLUMN IF NOT EXISTS ended_at Nullable(DateTime64(3, 'UTC')) AFTER started_at;

-- Invoice headers: one logical row per (tenant, period, subscription). Each recomputed
-- draft, and the finalization, writes a new revision; the highest revision is the invoice
-- (FINAL), and its lines are the ones written under that revision. Close and export read
-- one tenant's period, so the key leads with (tenant, period); the id, which `invoices
-- show` looks up, carries the period and has a bloom filter to skip granules.
CREATE TABLE IF NOT EXISTS {db}.invoices
(
    invoice_id   String,
    tenant       LowCardinality(String),
    period_start Date,
    subscription String,
    customer     String,
    currency     LowCardinality(String),
    tax_rate     Decimal(9, 4),
    status       LowCardinality(String),
    subtotal     Decimal(38, 9),
    tax          Decimal(38, 9),
    total        Decimal(38, 9),
    line_count   UInt32,
    digest       String,
    revision     UInt64,
    computed_at  DateTime64(3, 'UTC'),
    finalized_at Nullable(DateTime64(3, 'UTC')),
    INDEX invoice_id_bloom invoice_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant, period_start, subscription);

-- Invoice lines, per revision: a rewrite of the same revision (a retried close) folds
-- into the same rows, and an older revision's lines are history, never read as current.
-- applies_to is the period a line bills: the invoice's own, or an earlier, finalized one
-- for an adjustment. Amounts are exact before rounding (rated) and rounded once to the
-- currency's minor unit (amount, tax); breakdown is the line's tiers as JSON.
CREATE TABLE IF NOT EXISTS {db}.invoice_lines
(
    invoice_id   String,
    tenant       LowCardinality(String),
    period_start Date,
    subscription String,
    revision     UInt64,
    line         UInt32,
    kind         LowCardinality(String),
    item         String,
    group_key    String,
    plan         LowCardinality(String),
    plan_version UInt32,
    applies_to   Date,
    description  String,
    quantity     Decimal(38, 9),
    unit         LowCardinality(String),
    currency     LowCardinality(String),
    rated        Decimal(38, 9),
    amount       Decimal(38, 9),
    tax          Decimal(38, 9),
    breakdown    String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant, period_start, subscription, revision, line);

-- The lines of every invoice's current revision: what analytics reads.
CREATE VIEW IF NOT EXISTS {db}.current_invoice_lines AS
SELECT l.*, h.status AS status
FROM {db}.invoice_lines AS l
INNER JOIN (SELECT tenant, period_start, subscription, revision, status FROM {db}.invoices FINAL) AS h
    ON l.tenant = h.tenant AND l.period_start = h.period_start
    AND l.subscription = h.subscription AND l.revision = h.revision;

-- Revenue by plan and month, from invoices (drafts included; status tells them apart).
CREATE VIEW IF NOT EXISTS {db}.revenue_by_plan_month AS
SELECT tenant, period_start, plan, currency, status,
       uniqExact(subscription) AS subscriptions, sum(amount) AS amount, sum(tax) AS tax
FROM {db}.current_invoice_lines
GROUP BY tenant, period_start, plan, currency, status;

-- Usage by meter and day, from the deduplicated audit trail (quantities in meter units
-- times 10^scale, as stored).
CREATE VIEW IF NOT EXISTS {db}.usage_daily AS
SELECT tenant, meter, toDate(timestamp) AS day, count() AS events,
       uniqExact(subscription) AS subscriptions, sum(quantity) AS quantity
FROM {db}.events FINAL
GROUP BY tenant, meter, day;

-- Every close and finalize, with its counts: the audit trail of invoice runs, and what
-- the worker's invoice-run metrics read.
CREATE TABLE IF NOT EXISTS {db}.invoice_runs
(
    run_at        DateTime64(3, 'UTC'),
    action        LowCardinality(String),
    period_start  Date,
    tenant        String,
    created       UInt32,
    updated       UInt32,
    unchanged     UInt32,
    finalized     UInt32,
    already_final UInt32,
    problems      UInt32
)
ENGINE = MergeTree
ORDER BY run_at;
