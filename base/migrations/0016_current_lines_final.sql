-- A close killed after writing an invoice's lines and run again writes the same lines
-- twice; ReplacingMergeTree folds the copies only when it merges, so the current lines
-- are read with FINAL (found by tests/faults/test_kill_invoicing.py: revenue doubled).
CREATE OR REPLACE VIEW {db}.current_invoice_lines AS
SELECT l.*, h.status AS status
FROM {db}.invoice_lines AS l FINAL
INNER JOIN (SELECT tenant, period_start, subscription, revision, status FROM {db}.invoices FINAL) AS h
    ON l.tenant = h.tenant AND l.period_start = h.period_start
    AND l.subscription = h.subscription AND l.revision = h.revision;
