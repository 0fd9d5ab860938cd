-- Prepaid credits in units of a meter (invoicing/credits.py): a grant's amount is then
-- that meter's units, and its credit lines carry the units they took as their quantity.
-- Rows written before this migration are grants in currency ("").
ALTER TABLE {db}.credit_grants ADD COLUMN IF NOT EXISTS meter String AFTER voided;
