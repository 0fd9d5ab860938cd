"""One batch of Kafka records in, the rows to make durable out: a pure step, no I/O.

Validation, dedupe, aggregation and rating happen here; the worker only moves
records in and rows out, so every decision can be tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np

from aggregation.state import (
    MAX_PARTITIONS,
    MAX_RECORD_EVENTS,
    Aggregation,
    TotalKey,
    UsageState,
    Verdict,
    dedupe_key,
    value_digest,
)
from aggregation.subscriptions import Entry
from meterline.events import (
    EventWindow,
    Undecodable,
    UsageEvent,
    decode_record,
    encode,
    group_key,
    partition_of,
    utc_day,
)
from rating.period import Period
from rating.plans import Plan, PriceBook
from rating.rater import rate
from rating.table import ChargeTable

Record = tuple[int, int, bytes]  # partition, offset, payload


@dataclass(frozen=True, slots=True)
class Rejection:
    partition: int
    offset: int
    index: int  # the event's place in its record
    reason: str
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
class RatedTotal:
    tenant: str
    subscription: str
    meter: str
    group: str
    period_start: date
    plan: str
    plan_version: int
    currency: str
    quantity: int
    amount_nanos: int
    partition: int
    offset: int
    index: int
    value_at: int  # for a LATEST meter: when the value was measured (ms); else 0


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

    @property
    def duplicates(self) -> int:
        return len(self.repeated)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _PlanDay:
    """What one day means under one plan and anchor day: the version in force, the label
    of the billing period the day belongs to, and the meters that version prices, each
    with the largest period-to-date quantity its charge can rate."""

    plan: Plan
    period_start: date
    limits: dict[str, int]


class BatchProcessor:
    def __init__(
        self,
        state: UsageState,
        subscription_of: Callable[[tuple[str, str]], Entry | None],
        book: PriceBook,
        charges: ChargeTable,
        *,
        window: EventWindow,
        partitions: int,
    ) -> None:
        self.state = state
        # (tenant, subscription) -> its plans and end, or None when it is unknown
        self.subscription_of = subscription_of
        self.book = book
        self.charges = charges
        self.window = window
        if not 0 < partitions <= MAX_PARTITIONS:
            raise ValueError(f"the events topic can have 1 to {MAX_PARTITIONS} partitions")
        self.partitions = partitions  # of the events topic: where each subscription lives
        self._days: dict[tuple[str, date, int], _PlanDay | None] = {}
        self._home: dict[tuple[str, str], int] = {}
        # What the per-event loop needs of each meter, in one lookup.
        self._meters = {
            m.id: (m.group_by, Aggregation(m.aggregation), m.unique) for m in book.meters
        }
        self._unique = {m.id: m.unique for m in book.meters if m.unique}
        self._groups: dict[tuple[tuple[str, ...], tuple[object, ...]], str] = {}

    def _group(self, event: UsageEvent, names: tuple[str, ...]) -> str:
        """The event's group key, built once per distinct combination of values."""
        values = tuple(event.properties.get(name) for name in names)
        key = self._groups.get((names, values))
        if key is None:
            key = self._groups[(names, values)] = group_key(event.properties, names)
        return key

    def _home_partition(self, event: UsageEvent) -> int:
        owner = (event.tenant, event.subscription)
        home = self._home.get(owner)
        if home is None:
            home = self._home[owner] = partition_of(event.partition_key(), self.partitions)
        return home

    def _plan_day(self, plan_id: str, day: date, anchor: int) -> _PlanDay | None:
        key = (plan_id, day, anchor)
        if key not in self._days:
            plan = self.book.plan_at(plan_id, day)
            self._days[key] = None if plan is None else self._describe(plan, day, anchor)
        return self._days[key]

    def _describe(self, plan: Plan, day: date, anchor: int) -> _PlanDay:
        limits = {}
        for charge in plan.charges:
            row = self.charges.row(plan, charge.meter)
            limits[charge.meter] = self.charges.refs[row].max_quantity
        return _PlanDay(plan, Period.of(day, anchor).label, limits)

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Whole records only: a record is never split across two batches. This loop runs
        once per event, so what does not change within a record is looked up once."""
        result = BatchResult()
        changed: dict[TotalKey, Plan] = {}
        apply = self.state.apply
        oldest, newest = self.window.bounds()
        for partition, offset, payload in records:
            owner: tuple[str, str] | None = None
            entry: Entry | None = None
            ends: datetime | None = None
            elsewhere = False
            items = decode_record(payload)
            count = len(items)
            if not items:  # refused, so that every record is accounted for by a row
                result.rejected.append(Rejection(partition, offset, 0, "empty_record",
                                                 "the record holds no event", payload))  # fmt: skip
            for index, item in enumerate(items):
                if index >= MAX_RECORD_EVENTS:
                    detail = f"a record holds at most {MAX_RECORD_EVENTS} events"
                    result.rejected.append(Rejection(partition, offset, index, "record_too_large",
                                                     detail, b"", count))  # fmt: skip
                    continue
                if isinstance(item, Undecodable):
                    result.rejected.append(Rejection(partition, offset, index, "malformed",
                                                     item.detail, item.payload, count))  # fmt: skip
                    continue
                if (item.tenant, item.subscription) != owner:
                    owner = (item.tenant, item.subscription)
                    elsewhere = self._home_partition(item) != partition
                    entry = self.subscription_of(owner)
                    ends = entry.ends_at if entry else None
                day = utc_day(item.timestamp)
                known = (
                    None if entry is None else self._plan_day(entry.plan_on(day), day, entry.anchor)
                )
                if (
                    elsewhere
                    or known is None
                    or (ends is not None and item.timestamp >= ends)
                    or item.meter not in known.limits
                    or item.quantity < 0
                    or not oldest <= item.timestamp <= newest
                    or (
                        item.meter in self._unique
                        and self._unique[item.meter] not in item.properties
                    )
                ):
                    reason, detail = self._rejection(item, partition, entry, day)
                    result.rejected.append(Rejection(partition, offset, index, reason, detail,
                                                     encode(item), count, item))  # fmt: skip
                    continue
                mark = dedupe_key(item)
                group_by, aggregation, unique = self._meters[item.meter]
                group = self._group(item, group_by) if group_by else ""
                totals_key = (
                    owner[0], owner[1], item.meter, known.period_start, known.plan.id,
                    known.plan.version, group,
                )  # fmt: skip
                limit = known.limits[item.meter]
                value = value_digest(item.properties[unique]) if unique else b""
                new_value = bool(unique) and not self.state.knows_value(totals_key, value)
                verdict = apply(
                    (partition, offset, index), mark, totals_key, item.quantity,
                    limit=limit, aggregation=aggregation,
                    at=_millis(item.timestamp) if aggregation is Aggregation.LATEST else 0,
                    value=value,
                )  # fmt: skip
                if verdict is Verdict.DUPLICATE:
                    result.repeated.append(
                        AcceptedEvent(partition, offset, index, item, mark, count)
                    )
                    continue
                if verdict is Verdict.OVER_LIMIT:
                    detail = (
                        f"meter {item.meter!r} of {owner[1]!r} would pass {limit} units this "
                        f"period, beyond what {known.plan.label} can bill in 64-bit nano-units"
                    )
                    refused = Rejection(partition, offset, index, "amount_overflow", detail,
                                        encode(item), count, item)  # fmt: skip
                    result.rejected.append(refused)
                    continue
                result.accepted.append(AcceptedEvent(partition, offset, index, item, mark, count))
                if new_value:
                    result.distinct.append((totals_key, partition, value))
                if verdict is Verdict.APPLIED:
                    changed[totals_key] = known.plan
        began = time.perf_counter()
        result.rated = self._rate(list(changed.items()))
        result.rating_seconds = time.perf_counter() - began
        return result

    def _rejection(
        self, event: UsageEvent, partition: int, entry: Entry | None, day: date
    ) -> tuple[str, str]:
        """Why an event cannot be billed, as (machine-readable reason, detail for people)."""
        home = self._home_partition(event)
        if home != partition:
            return "wrong_partition", (
                f"sent to partition {partition}, but {event.tenant}/{event.subscription} "
                f"belongs on partition {home}: one subscription's events must share one"
            )
        if entry is None:
            return "unknown_subscription", (
                f"no subscription {event.subscription!r} for tenant {event.tenant!r}"
            )
        ends = entry.ends_at
        if ends is not None and event.timestamp >= ends:
            return "subscription_ended", (
                f"{event.tenant}/{event.subscription} ended at {ends.isoformat()}; the event "
                f"is stamped {event.timestamp.isoformat()}"
            )
        plan_id = entry.plan_on(day)
        known = self._plan_day(plan_id, day, entry.anchor)
        if known is None:
            return "plan_not_in_force", f"plan {plan_id!r} has no version in force on {day}"
        if event.meter not in known.limits:
            return "unpriced_meter", f"meter {event.meter!r} is not priced by {known.plan.label}"
        if event.quantity < 0:
            return "negative_quantity", f"quantity {event.quantity} is negative"
        outside = self.window.problem(event.timestamp)
        if outside is not None:
            return outside
        return "missing_property", (
            f"meter {event.meter!r} counts distinct values of the property "
            f"{self._unique[event.meter]!r}, which the event does not have"
        )

    def _rate(self, changed: list[tuple[TotalKey, Plan]]) -> list[RatedTotal]:
        if not changed:
            return []
        keys = [key for key, _ in changed]
        plans = [plan for _, plan in changed]
        charge_index = np.fromiter(
            (self.charges.row(plan, key[2]) for key, plan in changed),
            dtype=np.int64,
            count=len(keys),
        )
        totals = [self.state.totals[key] for key in keys]
        quantity = np.fromiter((t.quantity for t in totals), dtype=np.int64, count=len(keys))
        amounts = rate(self.charges, charge_index, quantity)
        return [
            RatedTotal(
                tenant=key[0],
                subscription=key[1],
                meter=key[2],
                group=key[6],
                period_start=key[3],
                plan=plan.id,
                plan_version=plan.version,
                currency=plan.currency,
                quantity=total.quantity,
                amount_nanos=int(amount),
                partition=total.partition,
                offset=total.offset,
                index=total.index,
                value_at=total.at,
            )
            for key, plan, total, amount in zip(keys, plans, totals, amounts, strict=True)
        ]
