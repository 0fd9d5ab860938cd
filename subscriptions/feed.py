"""The subscriptions topic: each subscription's row, as it is after every change, keyed by
tenant/subscription on a compacted topic, so the latest row of every subscription stays in
Kafka and every worker learns a change within a second, without a query per event.

The store stays the source of truth: a change is written there first and published
after, and a worker still re-reads the store now and then (``directory``), so a change
stored but never published is picked up too. A record is the ``Subscription`` itself,
with its version, so a worker never lets an older row undo a newer one, whichever way
each arrived.

Every worker reads the whole topic (no consumer group): each needs every subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from base.kafka_admin import ensure_topic
from subscriptions.directory import REFRESH_SECONDS
from subscriptions.model import Owner, Subscription, Terms

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Subscription)


def encode(row: Subscription) -> tuple[bytes, bytes]:
    """(key, value) of the record for one subscription's row."""
    return f"{row.tenant}/{row.subscription}".encode(), _encoder.encode(row)


def decode(value: bytes) -> Subscription:
    return _decoder.decode(value)


async def ensure_feed(bootstrap_servers: str, topic: str) -> None:
    """Create the topic, compacted (one partition: it is small, and keeps one order)."""
    await ensure_topic(bootstrap_servers, topic, 1, {"cleanup.policy": "compact"})


async def publish(bootstrap_servers: str, topic: str, rows: Sequence[Subscription]) -> None:
    await ensure_feed(bootstrap_servers, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, request_timeout_ms=10_000
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in map(encode, rows)]
        for delivery in sent:
            await delivery
    finally:
        await producer.stop()


async def announce(bootstrap_servers: str, topic: str, rows: Sequence[Subscription]) -> (
    str | None
):  # fmt: skip
    """Publish rows just stored (as the registry wrote them, with their version); a failure
    comes back as a warning for the caller to log or print. It is not raised: the store has
    the rows, and every worker reads them from it within ``REFRESH_SECONDS``."""
    try:
        await publish(bootstrap_servers, topic, rows)
    except Exception as error:
        warning = (f"stored, but not published to {topic} ({error}); workers read the change "
                   f"from the store within {REFRESH_SECONDS:.0f} s")  # fmt: skip
        return warning
    return None


async def follow(
    bootstrap_servers: str, topic: str, absorb: Callable[[Owner, Terms], None]
) -> None:
    """Read the topic from its start, then every new record, until cancelled. A record
    that does not decode (written by another version of meterline) is skipped, loudly:
    the store still holds that subscription, and the worker reads it from there."""
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
                    if record.value is None:
                        continue
                    try:
                        row = decode(record.value)
                    except msgspec.DecodeError as error:
                        log.warning("skipped a record at offset %d of %s: %s", record.offset,
                                    topic, error)  # fmt: skip
                        continue
                    absorb(row.owner, row.terms())
    finally:
        await consumer.stop()
