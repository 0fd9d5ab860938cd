"""The usage event shared by every stage, and its wire format (JSON).

Quantities are integers in the meter's declared scale, so no float ever
touches a billable number. The partition key groups one subscription's events
on one partition, which is what lets the aggregator reason about offsets.

A Kafka record holds one event (a JSON object) or a batch of events (a JSON array)
whose subscriptions all belong to the record's partition. Batches are how producers
reach tens of thousands of events per second: the per-record cost of Kafka and Faust
is paid once per batch, however the events spread over subscriptions. A subscription's
partition is the one Kafka's default partitioner gives its key, so a plain keyed
record from any Kafka client lands where meterline's batches do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import msgspec
import numpy as np
from aiokafka.partitioner import murmur2

# RFC 3339 with an offset ("2026-10-02T12:00:00Z"): a time without a zone is ambiguous.
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


Property = str | int | bool

# Events in one record, at most: an event's place in its record is 16 bits of its packed
# position (``aggregation.marks``).
MAX_RECORD_EVENTS = 1 << 16


class UsageEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    tenant: str
    subscription: str
    meter: str
    quantity: int
    timestamp: Timestamp
    source: str = "default"
    # Dimensions a meter may group by (region, model, ...); not billed themselves.
    properties: dict[str, Property] = msgspec.field(default_factory=dict)

    def partition_key(self) -> bytes:
        return owner_key(self.tenant, self.subscription)


def owner_key(tenant: str, subscription: str) -> bytes:
    """The Kafka key of a subscription's events: what puts them all on one partition."""
    return f"{tenant}/{subscription}".encode()


@dataclass(frozen=True)
class EventWindow:
    """The timestamps meterline accepts: not older than ``max_age``, not further ahead of
    its clock than ``max_skew``. Older usage goes to the dead-letter topic rather than into
    a period that may already be invoiced; the gateway applies the same rule up front."""

    max_age: timedelta
    max_skew: timedelta
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        now = now or self.clock()
        return now - self.max_age, now + self.max_skew

    def problem(
        self, timestamp: datetime, bounds: tuple[datetime, datetime] | None = None
    ) -> tuple[str, str] | None:
        """(reason, detail) when ``timestamp`` falls outside the window (``bounds``, or
        as of now), else None."""
        oldest, newest = bounds or self.bounds()
        if timestamp < oldest:
            return "too_old", (
                f"timestamp {timestamp.isoformat()} is older than the accepted "
                f"{self.max_age.days} days"
            )
        if timestamp > newest:
            return "in_future", (
                f"timestamp {timestamp.isoformat()} is more than "
                f"{self.max_skew.total_seconds():.0f} s ahead of meterline's clock"
            )
        return None


def utc_day(moment: datetime) -> date:
    """The UTC day of a moment: periods are UTC months, whatever offset an event states."""
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).date()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def millis(moment: datetime) -> int:
    """A moment in ms since 1970, exactly (a float timestamp can be one off)."""
    return (moment - EPOCH) // MILLISECOND


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client) picks."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


_SEED = 0x9747B28C
_MIX = np.uint32(0x5BD1E995)


def partitions_of(keys: Sequence[bytes], partitions: int) -> list[int]:
    """``partition_of`` of many keys at once: Kafka's murmur2 in NumPy, over all the keys
    of one length together (a million subscriptions' keys do not fit any cache of single
    answers, and the pure-Python murmur2 behind ``partition_of`` costs 4 µs a key)."""
    hashes = np.empty(len(keys), dtype=np.uint32)
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    for length in np.unique(lengths).tolist():
        chosen = np.flatnonzero(lengths == length)
        data = np.frombuffer(b"".join([keys[i] for i in chosen.tolist()]), dtype=np.uint8)
        hashes[chosen] = _murmur2(data.reshape(len(chosen), length), length)
    placed: list[int] = ((hashes & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()
    return placed


def _murmur2(data: np.ndarray, length: int) -> np.ndarray:
    """Murmur2 as Kafka's Java client computes it, of each row of ``data`` (keys of
    ``length`` bytes); uint32 arithmetic wraps as Java's int does."""
    h = np.full(data.shape[0], (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    blocks = length // 4
    words = np.ascontiguousarray(data[:, : blocks * 4]).view("<u4")
    for block in range(blocks):
        k = words[:, block] * _MIX
        k ^= k >> np.uint32(24)
        k *= _MIX
        h *= _MIX
        h ^= k
    tail = data[:, blocks * 4 :].astype(np.uint32)
    extra = length % 4
    if extra >= 3:
        h ^= tail[:, 2] << np.uint32(16)
    if extra >= 2:
        h ^= tail[:, 1] << np.uint32(8)
    if extra >= 1:
        h ^= tail[:, 0]
        h *= _MIX
    h ^= h >> np.uint32(13)
    h *= _MIX
    h ^= h >> np.uint32(15)
    return h


@dataclass(frozen=True, slots=True)
class Undecodable:
    """An item of a record that is not a valid event, with msgspec's explanation."""

    detail: str
    payload: bytes


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageEvent)
_batch_decoder = msgspec.json.Decoder(list[UsageEvent])
_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def encode(event: UsageEvent) -> bytes:
    return _encoder.encode(event)


def encode_batch(events: Sequence[UsageEvent]) -> bytes:
    """One record for several events of one partition (the caller groups them)."""
    return _encoder.encode(events)


def group_key(properties: dict[str, Property], names: tuple[str, ...]) -> str:
    """An event's group under a meter that groups by ``names``: a JSON object of those
    properties in that order (null where absent), or "" for a meter without groups."""
    if not names:
        return ""
    return _encoder.encode({name: properties.get(name) for name in names}).decode()


def properties_json(events: Sequence[UsageEvent]) -> list[bytes]:
    """Each event's properties as JSON (UTF-8), or b"" for none: the store's column."""
    encoded = _encoder.encode
    return [encoded(e.properties) if e.properties else b"" for e in events]


_properties_decoder = msgspec.json.Decoder(dict[str, Property])


def decode_properties(text: str) -> dict[str, Property]:
    """Properties as ``properties_json`` wrote them."""
    return _properties_decoder.decode(text) if text else {}


def group_label(key: str) -> str:
    """A group as people read it: "model=large, region=eu"."""
    if not key:
        return ""
    values = msgspec.json.decode(key)
    return ", ".join(
        f"{name}={'(none)' if value is None else value}" for name, value in values.items()
    )


def _decode_one(payload: bytes) -> UsageEvent | Undecodable:
    try:
        return _decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        return Undecodable(str(error), payload)


def clean_events(payload: bytes) -> list[UsageEvent] | None:
    """The events of a record in which every one is valid, or None: ``decode_record``
    then says which are not. The common case, in one call to the decoder."""
    try:
        if payload[:64].lstrip()[:1] != b"[":
            return [_decoder.decode(payload)]
        return _batch_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def decode_record(payload: bytes) -> list[UsageEvent | Undecodable]:
    """The events of a record, in order. A bad event in a batch is reported on its own and
    the others still decode; a record that is not JSON at all is one ``Undecodable``."""
    if payload[:64].lstrip()[:1] != b"[":
        return [_decode_one(payload)]
    try:
        return list(_batch_decoder.decode(payload))
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass  # find out which items are bad
    try:
        items = _items_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        return [Undecodable(str(error), payload)]
    return [_decode_one(bytes(item)) for item in items]
