"""Small Kafka clients for tests: send raw records, read a topic from the start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

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


async def read_records(
    bootstrap: str,
    topic: str,
    partitions: int,
    expected: int,
    *,
    timeout: float = 30.0,
    weight: Callable[[bytes], int] = lambda value: 1,
) -> list[Any]:
    """Every record of the topic until ``expected`` have arrived, counting each as the
    ``weight`` of its value (a record's events, say), or the timeout passes. Never trusts
    end_offsets(), which the embedded broker answers wrongly."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    arrived = 0
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout
        while arrived < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            fetched = [m for batch in batches.values() for m in batch if m.value]
            records.extend(fetched)
            arrived += sum(weight(m.value) for m in fetched)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records
