"""The base every stage stands on: the event model, settings, the metric catalogue,
logging, Kafka admin, the ClickHouse connection and its schema. It imports no stage."""
