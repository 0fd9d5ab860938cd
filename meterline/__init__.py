"""meterline: usage metering and rating on Kafka and ClickHouse."""
