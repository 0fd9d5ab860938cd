"""ClickHouse schema migrations, the store, and invoice summaries."""
