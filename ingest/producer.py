"""Produce usage events to Kafka, keyed by tenant/subscription so one subscription keeps one
partition. An event counts as sent only once the broker acknowledged it (acks=all)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from meterline.events import UsageEvent, encode

# Futures in flight before we wait for acknowledgements: bounds memory, keeps batches full.
_WINDOW = 5_000


async def produce(
    bootstrap_servers: str,
    topic: str,
    events: Iterable[UsageEvent],
    on_sent: Callable[[int], None] = lambda count: None,
) -> dict[int, int]:
    """Send every event and return the highest acknowledged offset per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
    )
    await producer.start()
    last_offsets: dict[int, int] = {}
    try:
        in_flight: list[asyncio.Future[object]] = []
        for event in events:
            in_flight.append(await producer.send(topic, encode(event), key=event.partition_key()))
            if len(in_flight) >= _WINDOW:
                await _settle(in_flight, last_offsets, on_sent)
        await _settle(in_flight, last_offsets, on_sent)
    finally:
        await producer.stop()
    return last_offsets


async def _settle(
    in_flight: list[asyncio.Future[object]],
    last_offsets: dict[int, int],
    on_sent: Callable[[int], None],
) -> None:
    for metadata in await asyncio.gather(*in_flight):
        partition, offset = metadata.partition, metadata.offset  # type: ignore[attr-defined]
        if offset > last_offsets.get(partition, -1):
            last_offsets[partition] = offset
    on_sent(len(in_flight))
    in_flight.clear()
