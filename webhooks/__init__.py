"""Webhooks: endpoints per tenant, the outbox of events derived from what the store
records, signed deliveries with retries, and every attempt recorded."""
