-- Invoices as legal documents. A customer's billing address, tax id and payment terms
-- (days from issue to due; net 30 by default). A finalized invoice's gapless number per
-- tenant, its issue and due days, and the parties as they were when it was issued (JSON:
-- name, address, tax id), so that a later change of address never rewrites an issued
-- invoice. Drafts have number 0 and no dates.
ALTER TABLE {db}.customers
    ADD COLUMN IF NOT EXISTS address String DEFAULT '',
    ADD COLUMN IF NOT EXISTS tax_id String DEFAULT '',
    ADD COLUMN IF NOT EXISTS payment_terms_days UInt16 DEFAULT 30;
ALTER TABLE {db}.invoices
    ADD COLUMN IF NOT EXISTS number UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS issued_on Nullable(Date),
    ADD COLUMN IF NOT EXISTS due_on Nullable(Date),
    ADD COLUMN IF NOT EXISTS seller String DEFAULT '',
    ADD COLUMN IF NOT EXISTS bill_to String DEFAULT '';
