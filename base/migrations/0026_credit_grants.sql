-- Prepaid credits (invoicing/credits.py): grants to a customer (or one of its
-- subscriptions) in a currency, free or paid (a paid one's price is billed as a top-up),
-- applied to invoices before tax in their declared order; each application is a line of
-- the invoice (kind 'credit'), so the balance is the grant less those lines.
CREATE TABLE IF NOT EXISTS {db}.credit_grants
(
    tenant         LowCardinality(String),
    grant_id       String,
    customer       String,
    subscription   String,
    currency       LowCardinality(String),
    amount         Decimal(38, 9),
    priority       UInt32,
    effective_from Date,
    expires_on     Nullable(Date),
    kind           LowCardinality(String),
    price          Decimal(38, 9),
    reason         String,
    voided         Bool,
    created_at     DateTime64(3, 'UTC'),
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, grant_id);
