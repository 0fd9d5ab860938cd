-- Payments against finalized invoices (invoicing/payments.py): each recorded once by its
-- id (a bank statement line's id is a digest of the line, so importing a statement twice
-- records nothing the second time). And what collections did to an invoice: a payment
-- attempt that failed, or a write-off; the latest wins.
CREATE TABLE IF NOT EXISTS {db}.payments
(
    tenant      LowCardinality(String),
    payment_id  String,
    invoice_id  String,
    amount      Decimal(38, 9),
    currency    LowCardinality(String),
    received_on Date,
    source      LowCardinality(String),
    reference   String,
    recorded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, payment_id);

CREATE TABLE IF NOT EXISTS {db}.invoice_collection
(
    tenant     LowCardinality(String),
    invoice_id String,
    event      LowCardinality(String),
    detail     String,
    at         DateTime64(3, 'UTC'),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, invoice_id);
