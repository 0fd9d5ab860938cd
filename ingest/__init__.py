"""Getting usage events into Kafka: the producer (and, later, the HTTP gateway and SDK)."""
