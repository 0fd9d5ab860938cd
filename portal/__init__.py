"""The customer portal: a customer's invoices, credit notes and usage, by a signed link."""
