"""Produce usage events to Kafka so that each subscription keeps one partition, the one
Kafka's default partitioner gives its tenant/subscription key. An event counts as sent
only once the broker acknowledged it (acks=all).

Events bound for one partition travel together in one record (a JSON array) of up to
``batch_events``, each subscription's in the order given; Kafka's and Faust's cost per
record is then paid once per batch, not once per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from aiokafka import AIOKafkaProducer

from base.events import UsageEvent, encode, encode_batch, partitions_of

# Records in flight before we wait for acknowledgements: bounds memory, keeps batches full.
_WINDOW = 200
_CHUNK = 10_000  # events partitioned in one go
BATCH_EVENTS = 500


def records(
    events: Iterable[UsageEvent], partitions: int, batch_events: int
) -> Iterator[tuple[int, bytes, int]]:
    """(partition, value, event count) per record, grouping events by partition into
    batches of up to ``batch_events``; a batch of one is a plain JSON object."""
    pending: dict[int, list[UsageEvent]] = {}
    stream = iter(events)
    while chunk := list(islice(stream, _CHUNK)):  # partitioned together, still streamed
        homes = partitions_of([event.partition_key() for event in chunk], partitions)
        for event, partition in zip(chunk, homes, strict=True):
            group = pending.setdefault(partition, [])
            group.append(event)
            if len(group) >= batch_events:
                yield partition, _value(group), len(group)
                del pending[partition]
    for partition, group in pending.items():
        yield partition, _value(group), len(group)


def _value(group: list[UsageEvent]) -> bytes:
    return encode(group[0]) if len(group) == 1 else encode_batch(group)


class Publisher:
    """A started producer for one topic; ``send`` returns once every event is acknowledged."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        batch_events: int = BATCH_EVENTS,
        *,
        idempotent: bool = False,
    ) -> None:
        self.topic = topic
        self._idempotent = idempotent
        self._bootstrap_servers = bootstrap_servers
        self._batch_events = batch_events
        self._producer: AIOKafkaProducer | None = None
        self.partitions = 0

    async def __aenter__(self) -> Publisher:
        # aiokafka binds its producer to the running loop, so it is made here, not in __init__.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
            # Apache Kafka then drops the broker-side duplicates of retried sends itself;
            # either way the worker's dedupe absorbs them.
            enable_idempotence=self._idempotent,
        )
        await producer.start()
        try:
            self.partitions = len(await producer.partitions_for(self.topic))
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise unless the cluster answers a metadata request within ``timeout`` seconds."""
        if self._producer is None:
            raise RuntimeError("the producer is not started")
        await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout)

    async def send(
        self, events: Iterable[UsageEvent], on_sent: Callable[[int], None] = lambda count: None
    ) -> dict[int, int]:
        """Send every event and return the highest acknowledged offset per partition.
        ``on_sent`` receives the number of events acknowledged so far."""
        if self._producer is None:
            raise RuntimeError("enter the publisher (async with) before sending")
        last_offsets: dict[int, int] = {}
        acknowledged = 0
        in_flight: list[tuple[asyncio.Future[object], int]] = []
        for partition, value, count in records(events, self.partitions, self._batch_events):
            future = await self._producer.send(self.topic, value, partition=partition)
            in_flight.append((future, count))
            if len(in_flight) >= _WINDOW:
                acknowledged += await _settle(in_flight, last_offsets)
                on_sent(acknowledged)
        acknowledged += await _settle(in_flight, last_offsets)
        on_sent(acknowledged)
        return last_offsets


async def produce(
    bootstrap_servers: str,
    topic: str,
    events: Iterable[UsageEvent],
    on_sent: Callable[[int], None] = lambda count: None,
    batch_events: int = BATCH_EVENTS,
) -> dict[int, int]:
    """Send every event with a producer of its own; see ``Publisher.send``."""
    async with Publisher(bootstrap_servers, topic, batch_events) as publisher:
        return await publisher.send(events, on_sent)


async def _settle(
    in_flight: list[tuple[asyncio.Future[object], int]], last_offsets: dict[int, int]
) -> int:
    """Wait for the records in flight; return how many events they held."""
    for metadata in await asyncio.gather(*(future for future, _ in in_flight)):
        partition, offset = metadata.partition, metadata.offset  # type: ignore[attr-defined]
        if offset > last_offsets.get(partition, -1):
            last_offsets[partition] = offset
    events = sum(count for _, count in in_flight)
    in_flight.clear()
    return events
