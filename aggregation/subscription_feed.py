"""The subscriptions topic: each subscription's row, as it is after every change, keyed by
tenant/subscription on a compacted topic, so the latest row of every subscription stays in
Kafka and every worker learns a change within a second, without a query per event.

The store stays the source of truth: a change is written there first and published
after, and a worker still re-reads the store now and then (``subscriptions``), so a
change stored but never published is picked up too. A record carries the row's version,
so a worker never lets an older row undo a newer one, whichever way each arrived.

Every worker reads the whole topic (no consumer group): each needs every subscription.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aggregation.subscriptions import REFRESH_SECONDS, Entry, Owner
from invoicing.store import SubscriptionRow
from meterline.kafka_admin import ensure_topic


class _Row(msgspec.Struct, frozen=True):
    tenant: str
    subscription: str
    plan: str
    version: int
    ends_at: datetime | None = None
    changes: list[tuple[date, str]] = msgspec.field(default_factory=list)
    anchor: int = 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Row)


def encode(owner: Owner, entry: Entry) -> tuple[bytes, bytes]:
    """(key, value) of the record for one subscription's row."""
    row = _Row(owner[0], owner[1], entry.plan, entry.version, entry.ends_at, list(entry.changes),
               entry.anchor)  # fmt: skip
    return f"{owner[0]}/{owner[1]}".encode(), _encoder.encode(row)


def decode(value: bytes) -> tuple[Owner, Entry]:
    row = _decoder.decode(value)
    entry = Entry(row.plan, row.ends_at, row.version, tuple(row.changes), row.anchor)
    return (row.tenant, row.subscription), entry


async def ensure_feed(bootstrap_servers: str, topic: str) -> None:
    """Create the topic, compacted (one partition: it is small, and keeps one order)."""
    await ensure_topic(bootstrap_servers, topic, 1, {"cleanup.policy": "compact"})


async def publish(bootstrap_servers: str, topic: str, rows: Sequence[tuple[Owner, Entry]]) -> None:
    await ensure_feed(bootstrap_servers, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, request_timeout_ms=10_000
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in map(_pair, rows)]
        for delivery in sent:
            await delivery
    finally:
        await producer.stop()


def _pair(row: tuple[Owner, Entry]) -> tuple[bytes, bytes]:
    return encode(*row)


async def announce(
    bootstrap_servers: str, topic: str, rows: Sequence[SubscriptionRow], version: int
) -> str | None:
    """Publish rows just stored; a failure comes back as a warning for the caller to log
    or print. It is not raised: the store has the rows, and every worker reads them from
    it within ``REFRESH_SECONDS``."""
    try:
        await publish(bootstrap_servers, topic, entries(rows, version))
    except Exception as error:
        warning = (f"stored, but not published to {topic} ({error}); workers read the change "
                   f"from the store within {REFRESH_SECONDS:.0f} s")  # fmt: skip
        return warning
    return None


def entries(rows: Sequence[SubscriptionRow], version: int) -> list[tuple[Owner, Entry]]:
    """The workers' view of stored rows written with ``version``."""
    return [
        ((r.tenant, r.subscription), Entry(r.plan, r.ended_at, version, r.changes, r.anchor_day))
        for r in rows
    ]


async def follow(
    bootstrap_servers: str, topic: str, absorb: Callable[[Owner, Entry], None]
) -> None:
    """Read the topic from its start, then every new record, until cancelled."""
    await ensure_feed(bootstrap_servers, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        absorb(*decode(record.value))
    finally:
        await consumer.stop()
