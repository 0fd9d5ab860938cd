-- The day of the month a subscription's billing periods start on (1 to 28; 1: calendar
-- months). Rated totals and invoices stay keyed by the period's label, the first of the
-- month it starts in, so every query by period reads the same way; the invoice keeps the
-- anchor to say which days it bills.
ALTER TABLE {db}.subscriptions ADD COLUMN IF NOT EXISTS anchor_day UInt8 DEFAULT 1;
ALTER TABLE {db}.invoices ADD COLUMN IF NOT EXISTS anchor_day UInt8 DEFAULT 1;
