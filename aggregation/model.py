"""The pipeline's coordinates and rows: where an event sits in the log, which total it
counts into, and what a batch leaves to make durable. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import NamedTuple

import msgspec

from base.events import UsageEvent


class Record(NamedTuple):
    """One Kafka record as the batch step takes it."""

    partition: int
    offset: int  # an ordinal: the log's epoch above the Kafka offset (``log_identity``)
    payload: bytes


class Position(NamedTuple):
    """Where one event sits: its record's partition and offset, and its place in it."""

    partition: int
    offset: int  # an ordinal, as in ``Record``
    event_index: int


class TotalKey(msgspec.Struct, frozen=True, gc=False, order=True):
    """One period-to-date total. A period's usage is split where the subscription changes
    plan or a new plan version takes effect, and by the meter's group-by properties (the
    group is "" for a meter without them); each part is rated on its own.

    A struct the garbage collector does not track (it holds only strings, ints and a
    date): a worker keeps one per total, millions of them, and a tracked key (a named
    tuple) made every collection walk them all, 1 µs of CPU per event."""

    tenant: str
    subscription: str
    meter: str
    period_start: date
    plan: str
    plan_version: int
    group: str


@dataclass(frozen=True, slots=True)
class Rejection:
    partition: int
    offset: int
    index: int  # the event's place in its record
    reason: str  # one of ``refusals.RULES``, or how the record itself is broken
    detail: str
    payload: bytes
    record_events: int = 1  # how many events its record holds (reconciliation counts them)
    event: UsageEvent | None = None  # when it decoded


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An event counted once: billed, or (in ``BatchResult.repeated``) a duplicate."""

    partition: int
    offset: int
    index: int
    event: UsageEvent
    dedupe_key: bytes
    record_events: int = 1  # how many events its record holds (reconciliation counts them)


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An event that reached another partition than its subscription's (a producer with
    another partitioner than Kafka's Java default): sent on to ``home``, where it is judged
    and billed like any other. Billing it here would break the replay rule, which needs
    each subscription's events in one partition's order."""

    partition: int
    offset: int
    index: int
    home: int
    event: UsageEvent
    record_events: int = 1


@dataclass(frozen=True, slots=True)
class RatedTotal:
    """A total rated: written by the batch step, and read back as it was written by the
    usage API, invoices and reports (``readers``)."""

    tenant: str
    subscription: str
    meter: str
    group: str  # the group key (JSON of the group-by values), "" for an ungrouped meter
    period_start: date
    plan: str
    plan_version: int
    currency: str
    quantity: int  # in the meter's scale
    amount_nanos: int  # exact, in nano-units of ``currency``
    partition: int
    offset: int  # an ordinal, as in ``Record``
    index: int
    value_at: int  # for a LATEST meter: when the value was measured (ms); else 0

    @property
    def amount(self) -> Decimal:
        """The amount in units of the currency, exact (before any invoice rounding)."""
        return Decimal(self.amount_nanos).scaleb(-9)

    @property
    def key(self) -> TotalKey:
        return TotalKey(self.tenant, self.subscription, self.meter, self.period_start,
                        self.plan, self.plan_version, self.group)  # fmt: skip


@dataclass
class BatchResult:
    accepted: list[AcceptedEvent] = field(default_factory=list)
    rated: list[RatedTotal] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Events dropped as duplicates, kept so that every event of a record is accounted for.
    repeated: list[AcceptedEvent] = field(default_factory=list)
    rating_seconds: float = 0.0
    # Values unique counts saw for the first time: (total, partition, value digest).
    distinct: list[tuple[TotalKey, int, bytes]] = field(default_factory=list)
    # Events to send on to their subscription's partition once the batch is durable.
    forwarded: list[Forwarded] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return len(self.repeated)
