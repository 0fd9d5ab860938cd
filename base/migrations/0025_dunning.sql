-- Dunning (invoicing/dunning.py): each tenant's policy (its steps, its final action, and
-- where its events go), and every action taken for an overdue invoice, once per step:
-- the outbox its events are delivered from (delivered_at stays empty until the receiver
-- answered 2xx, and a later run tries again).
CREATE TABLE IF NOT EXISTS {db}.dunning_policies
(
    tenant     LowCardinality(String),
    policy     String,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY tenant;

CREATE TABLE IF NOT EXISTS {db}.dunning_actions
(
    tenant       LowCardinality(String),
    invoice_id   String,
    step         UInt16,
    action       LowCardinality(String),
    event        String,
    created_at   DateTime64(3, 'UTC'),
    delivered_at Nullable(DateTime64(3, 'UTC')),
    attempts     UInt32,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, invoice_id, step);
