"""Customers and subscriptions: the one model, lifecycle rules, the registry, imports, the
compacted-topic feed, their HTTP API and their store (ARCHITECTURE.md)."""
