-- Credit notes: what corrects a finalized invoice, which never changes. Numbered gaplessly
-- per tenant in a sequence of their own; the id carries the tenant and the number, so a
-- retried write lands on the same rows. A note's lines are written before its header, and
-- readers take the notes whose header exists.
CREATE TABLE IF NOT EXISTS {db}.credit_notes
(
    tenant         LowCardinality(String),
    number         UInt64,
    credit_note_id String,
    invoice_id     String,
    invoice_number UInt64,
    subscription   String,
    period_start   Date,
    currency       LowCardinality(String),
    reason         String,
    issued_on      Date,
    subtotal       Decimal(38, 9),
    tax            Decimal(38, 9),
    total          Decimal(38, 9),
    written_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, number);

CREATE TABLE IF NOT EXISTS {db}.credit_note_lines
(
    tenant         LowCardinality(String),
    number         UInt64,
    line           UInt32,
    kind           LowCardinality(String),
    item           String,
    plan           LowCardinality(String),
    plan_version   UInt32,
    description    String,
    amount         Decimal(38, 9),
    tax            Decimal(38, 9),
    period_start   Date,
    subscription   String
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, number, line);

-- Revenue by plan and month now takes credit notes off, as their own status, in the
-- period of the invoice they credit.
CREATE OR REPLACE VIEW {db}.revenue_by_plan_month AS
SELECT tenant, period_start, plan, currency, status,
       uniqExact(subscription) AS subscriptions, sum(amount) AS amount, sum(tax) AS tax
FROM
(
    SELECT tenant, period_start, plan, currency, status, subscription, amount, tax
    FROM {db}.current_invoice_lines
    UNION ALL
    SELECT l.tenant, l.period_start, l.plan, h.currency, 'credited' AS status, l.subscription,
           -l.amount AS amount, -l.tax AS tax
    FROM {db}.credit_note_lines AS l FINAL
    INNER JOIN {db}.credit_notes AS h FINAL ON l.tenant = h.tenant AND l.number = h.number
)
GROUP BY tenant, period_start, plan, currency, status;
