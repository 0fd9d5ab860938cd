-- What a worker needs to restore a total that rating does not read from its quantity: the
-- events it absorbed (a percentage charge's free transactions, an average's count), the
-- running aggregate (an average's sum, where the quantity billed is the mean; a weighted
-- sum's integral, value × ms; for every other meter the quantity itself, as rows written
-- before this migration read it), a percentage charge's fees accrued transaction by
-- transaction, in nano-units, and a weighted sum's last value (held to its slice's end).
ALTER TABLE {db}.rated_usage
    ADD COLUMN IF NOT EXISTS events UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS aggregate Int64 DEFAULT quantity,
    ADD COLUMN IF NOT EXISTS fees Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_value Int64 DEFAULT 0;
