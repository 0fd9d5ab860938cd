-- Webhooks (webhooks/): endpoints per tenant; each message made from a fact of the store,
-- kept with the body every attempt sends; every attempt (and every replay asked for),
-- from which a delivery's state and next attempt are read; and how far the outbox has
-- derived messages from the store's facts.
CREATE TABLE IF NOT EXISTS {db}.webhook_endpoints
(
    tenant      LowCardinality(String),
    endpoint_id String,
    url         String,
    secret      String,
    types       Array(String),
    removed     Bool,
    created_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, endpoint_id);

CREATE TABLE IF NOT EXISTS {db}.webhook_messages
(
    tenant      LowCardinality(String),
    message_id  String,
    type        LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    body        String,
    recorded_at DateTime64(3, 'UTC')
)
-- Read with the first row of each id (argMin): a message made twice in a race keeps the
-- body its first attempt may have sent.
ENGINE = MergeTree
ORDER BY (tenant, message_id);

CREATE TABLE IF NOT EXISTS {db}.webhook_attempts
(
    tenant       LowCardinality(String),
    message_id   String,
    endpoint_id  String,
    attempted_at DateTime64(3, 'UTC'),
    kind         LowCardinality(String),
    status       UInt16,
    detail       String
)
ENGINE = MergeTree
ORDER BY (tenant, message_id, endpoint_id, attempted_at);

CREATE TABLE IF NOT EXISTS {db}.webhook_cursor
(
    name    LowCardinality(String),
    through DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;
