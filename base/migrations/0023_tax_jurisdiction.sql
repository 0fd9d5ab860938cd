-- Tax by jurisdiction (invoicing/tax.py): where a customer is (ISO 3166-1 alpha-2
-- country, and a region where one is kept, such as a Canadian province) and whether it
-- is exempt; and, on an invoice, the rule it was taxed by, which each line names.
ALTER TABLE {db}.customers
    ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS region LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS tax_exempt Bool DEFAULT false;
ALTER TABLE {db}.invoices ADD COLUMN IF NOT EXISTS tax_rule String DEFAULT '';
