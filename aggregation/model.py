"""The pipeline's coordinates and rows: where an event sits in the log, which total it
counts into, and what a batch leaves to make durable. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from itertools import compress
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
class EventRows:
    """Events counted once, as columns (one list per attribute, in the log's order): the
    batch step's billed events, or its duplicates. The store takes the columns as they
    are; iterating gives each as an ``AcceptedEvent``, for code that wants one at a time."""

    events: list[UsageEvent] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # ordinals, as in ``Record``
    indices: list[int] = field(default_factory=list)
    record_events: list[int] = field(default_factory=list)
    marks: list[bytes] = field(default_factory=list)  # dedupe marks

    @classmethod
    def of(cls, rows: Iterable[AcceptedEvent]) -> EventRows:
        rows = list(rows)
        return cls([r.event for r in rows], [r.partition for r in rows],
                   [r.offset for r in rows], [r.index for r in rows],
                   [r.record_events for r in rows], [r.dedupe_key for r in rows])  # fmt: skip

    def select(self, keep: list[bool]) -> EventRows:
        return EventRows(
            list(compress(self.events, keep)), list(compress(self.partitions, keep)),
            list(compress(self.offsets, keep)), list(compress(self.indices, keep)),
            list(compress(self.record_events, keep)), list(compress(self.marks, keep)),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: int) -> AcceptedEvent:
        return AcceptedEvent(self.partitions[i], self.offsets[i], self.indices[i],
                             self.events[i], self.marks[i], self.record_events[i])  # fmt: skip

    def __iter__(self) -> Iterator[AcceptedEvent]:
        for row in zip(self.partitions, self.offsets, self.indices, self.events, self.marks,
                       self.record_events, strict=True):  # fmt: skip
            yield AcceptedEvent(*row)


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
    events: int = 0  # how many events the total absorbed (0 in rows older than the count)
    fees_nanos: int = 0  # under a percentage charge: its transactions' fees, before bounds
    # The running aggregate the worker restores it from (None: its quantity); for a
    # weighted sum the integral up to ``value_at`` (value × ms), and its last value, from
    # which an invoice holds the value to the end of the slice it bills.
    aggregate: int | None = None
    last_value: int = 0

    @property
    def amount(self) -> Decimal:
        """The amount in units of the currency, exact (before any invoice rounding)."""
        return Decimal(self.amount_nanos).scaleb(-9)

    @property
    def key(self) -> TotalKey:
        return TotalKey(self.tenant, self.subscription, self.meter, self.period_start,
                        self.plan, self.plan_version, self.group)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RatedRows:
    """Totals a batch rated, as columns: what the store writes of each ``RatedTotal``."""

    keys: list[TotalKey] = field(default_factory=list)
    currencies: list[str] = field(default_factory=list)
    quantities: list[int] = field(default_factory=list)
    amounts_nanos: list[int] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # ordinals, as in ``Record``
    indices: list[int] = field(default_factory=list)
    values_at: list[int] = field(default_factory=list)
    # What the worker restores each total from: the running aggregate (an average's sum;
    # for any other meter the quantity), the events absorbed and a percentage's fees.
    aggregates: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    fees_nanos: list[int] = field(default_factory=list)
    lasts: list[int] = field(default_factory=list)  # a weighted sum's last value, else 0

    @classmethod
    def of(cls, rows: Iterable[RatedTotal]) -> RatedRows:
        """Rows as the readers give them back."""
        rows = list(rows)
        return cls([r.key for r in rows], [r.currency for r in rows],
                   [r.quantity for r in rows], [r.amount_nanos for r in rows],
                   [r.partition for r in rows], [r.offset for r in rows],
                   [r.index for r in rows], [r.value_at for r in rows],
                   [r.quantity if r.aggregate is None else r.aggregate for r in rows],
                   [r.events for r in rows],
                   [r.fees_nanos for r in rows], [r.last_value for r in rows])  # fmt: skip

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> RatedTotal:
        key = self.keys[i]
        return RatedTotal(key.tenant, key.subscription, key.meter, key.group, key.period_start,
                          key.plan, key.plan_version, self.currencies[i], self.quantities[i],
                          self.amounts_nanos[i], self.partitions[i], self.offsets[i],
                          self.indices[i], self.values_at[i], self.events[i],
                          self.fees_nanos[i], self.aggregates[i], self.lasts[i])  # fmt: skip

    def __iter__(self) -> Iterator[RatedTotal]:
        return (self[i] for i in range(len(self)))


class Crossing(NamedTuple):
    """An alert rule's threshold crossed by a batch (``alerts``)."""

    id: str
    tenant: str
    subscription: str
    rule: str
    rule_version: int
    period: date  # the label of the billing period
    metric: str
    threshold: Decimal
    value: Decimal  # the value the batch took it to
    crossed_at: datetime
    partition: int


@dataclass
class BatchResult:
    accepted: EventRows = field(default_factory=EventRows)
    rated: RatedRows = field(default_factory=RatedRows)
    rejected: list[Rejection] = field(default_factory=list)
    # Events dropped as duplicates, kept so that every event of a record is accounted for.
    repeated: EventRows = field(default_factory=EventRows)
    rating_seconds: float = 0.0
    # Values unique counts saw for the first time: (total, partition, value digest).
    distinct: list[tuple[TotalKey, int, bytes]] = field(default_factory=list)
    # Events to send on to their subscription's partition once the batch is durable.
    forwarded: list[Forwarded] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)  # alert thresholds crossed

    @property
    def duplicates(self) -> int:
        return len(self.repeated)
