"""Small Kafka clients for tests: send raw records, read a topic from the start."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def send_raw(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    """Records exactly as given (partition, value): what a careless producer might send."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, value in records:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def read_values(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30.0
) -> list[bytes]:
    """Every value of the topic until ``expected`` have arrived (or the timeout passes);
    never trusts end_offsets(), which the embedded broker answers wrongly."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            values.extend(m.value for batch in batches.values() for m in batch if m.value)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return values
