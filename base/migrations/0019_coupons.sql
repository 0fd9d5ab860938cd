-- Coupons a subscription takes on: each the day it applies from, the coupon's id in the
-- price book, and the day it was ended from (1970-01-01: not ended), in parallel arrays
-- like the plan changes. Rows written before this migration read as having none.
ALTER TABLE {db}.subscriptions
    ADD COLUMN IF NOT EXISTS coupon_days Array(Date),
    ADD COLUMN IF NOT EXISTS coupon_ids Array(String),
    ADD COLUMN IF NOT EXISTS coupon_ends Array(Date);
