-- What a worker needs to restore a total that rating does not read from its quantity: the
-- events it absorbed (a percentage charge's free transactions, an average's count), the
-- running aggregate (an average's sum, where the quantity billed is the mean; for every
-- other meter the quantity itself, as rows written before this migration read it), and a
-- percentage charge's fees accrued transaction by transaction, in nano-units.
ALTER TABLE {db}.rated_usage
    ADD COLUMN IF NOT EXISTS events UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS aggregate Int64 DEFAULT quantity,
    ADD COLUMN IF NOT EXISTS fees Int64 DEFAULT 0;
