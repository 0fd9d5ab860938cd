-- The currency a customer is billed in; "" when not given. A subscription may only be on
-- a plan priced in it (checked on import and on a plan change).
ALTER TABLE {db}.customers ADD COLUMN IF NOT EXISTS currency LowCardinality(String) AFTER name;
