"""Today's batch step before issue 18's columnar one, kept as the reference the columnar
step is checked against (``test_columnar_step``): one event at a time, every decision
where it was, the replay rule as ``UsageState.apply`` had it. It reads and changes a
``UsageState`` as the columnar step does, and answers in plain lists of rows. It is not
used by meterline itself: do not change it to follow the step, only to follow a change
of the rules that the step makes too (and say so in both). Parts of it repeat the step
(``refusal``, the replay rule, ``_combine``) on purpose: an oracle that shared them would
agree with a mistake in them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from aggregation import refusals
from aggregation.marks import MAX_PARTITIONS, pack, unpack
from aggregation.model import (
    AcceptedEvent,
    Forwarded,
    Position,
    RatedTotal,
    Record,
    Rejection,
    TotalKey,
)
from aggregation.state import (
    OUT_OF_ORDER,
    OVER_LIMIT,
    VERDICTS,
    Aggregation,
    Total,
    UsageState,
    Verdict,
    dedupe_key,
    value_digest,
)
from base.events import (
    MAX_RECORD_EVENTS,
    EventWindow,
    Undecodable,
    UsageEvent,
    decode_record,
    encode,
    group_key,
    partition_of,
    utc_day,
)
from rating.money import INT64_MAX, from_nanos
from rating.period import Period
from rating.plans import Plan, PriceBook
from rating.rater import rate
from rating.table import ChargeTable
from rating.transactions import TransactionFees
from subscriptions.model import Owner, Terms


@dataclass
class BatchResult:
    """The rows of one batch, one object per row."""

    accepted: list[AcceptedEvent] = field(default_factory=list)
    rated: list[RatedTotal] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    repeated: list[AcceptedEvent] = field(default_factory=list)
    rating_seconds: float = 0.0
    distinct: list[tuple[TotalKey, int, bytes]] = field(default_factory=list)
    forwarded: list[Forwarded] = field(default_factory=list)


def _combine(total: Total, value: int, aggregation: Aggregation, at: int) -> tuple[int, int]:
    """(aggregate, its timestamp) once ``value`` stamped ``at`` joins ``total``: the state's
    own, copied, so that a change there is caught here."""
    if aggregation is Aggregation.MAX:
        return max(total.quantity, value), total.at
    if aggregation is Aggregation.MIN:  # a rule added after the step changed (issue 20)
        return min(total.quantity, value), total.at
    if aggregation is Aggregation.LATEST:
        return (value, at) if at >= total.at else (total.quantity, total.at)
    return total.quantity + value, total.at


def apply(
    self: UsageState,
    position: Position,
    mark: bytes,
    totals_key: TotalKey,
    quantity: int,
    *,
    limit: int = INT64_MAX,
    aggregation: Aggregation = Aggregation.SUM,
    at: int = 0,
    value: bytes = b"",
    transactions: TransactionFees | None = None,
    until: int = 0,
    per_ms: int = 1,
) -> Verdict:
    """Count the event once into its total, unless the total would pass ``limit``
    (then nothing changes, the mark included, so the decision is the same on replay).
    ``at`` is the event's timestamp in ms, used by LATEST; ``value`` the digest of the
    property a UNIQUE_COUNT counts. Rules added after the step changed (issue 20): every
    total counts its events, an average's limit bounds its mean, and a percentage
    charge's ``transactions`` accrue a fee per event, refused past 64 bits unless the
    charge has a maximum; a weighted sum (``_weigh``) refuses a report out of time order,
    and a refusal is remembered with its verdict."""
    packed = pack(position)
    if packed in self.refused:
        return VERDICTS[self.refused[packed]]
    seen = self.marks.get(mark)
    if seen is not None and seen != packed:
        return Verdict.DUPLICATE
    partition, offset, index = position
    seen_values = None
    if aggregation is Aggregation.UNIQUE_COUNT:
        seen_values = self.distinct.setdefault(totals_key, (partition, set()))[1]
        # The set may hold values the stored total had not counted yet (see above).
        amount = len(seen_values) + (value not in seen_values)
    else:
        amount = 1 if aggregation is Aggregation.COUNT else quantity
    total = self.totals.get(totals_key)
    replayed = total is not None and total.partition == partition and (
        total.offset, total.index) >= (offset, index)  # fmt: skip
    if aggregation is Aggregation.WEIGHTED_SUM and not replayed:
        return _weigh(self, packed, mark, totals_key, quantity, limit=limit, at=at, until=until,
                      per_ms=per_ms)  # fmt: skip
    if total is None:
        fees = 0 if transactions is None else transactions.fee(0, 0, quantity)
        if amount > limit or (fees > INT64_MAX and not transactions.saturates):  # type: ignore[union-attr]
            self.refused[packed] = OVER_LIMIT
            return Verdict.OVER_LIMIT
        self.marks[mark] = packed
        self.totals[totals_key] = Total(amount, partition, offset, index, at, 1,
                                        min(fees, INT64_MAX))  # fmt: skip
    elif total.partition == partition and (total.offset, total.index) >= (offset, index):
        self.marks[mark] = packed
        if seen_values is not None:
            seen_values.add(value)
        return Verdict.REPLAYED
    else:
        if aggregation is Aggregation.SUM:  # the common case, without a call
            combined, combined_at = total.quantity + amount, total.at
        elif seen_values is not None:
            combined, combined_at = amount, total.at
        else:
            combined, combined_at = _combine(total, amount, aggregation, at)
        events = total.events + 1
        priced = combined
        if aggregation is Aggregation.AVG:
            priced = (2 * combined + events) // (2 * events)
        fees = total.fees
        if transactions is not None:
            fees += transactions.fee(total.events, total.quantity, quantity)
        if (
            priced > limit
            or combined > INT64_MAX
            or (fees > INT64_MAX and not transactions.saturates)  # type: ignore[union-attr]
        ):
            self.refused[packed] = OVER_LIMIT
            return Verdict.OVER_LIMIT
        self.marks[mark] = packed
        total.quantity, total.at = combined, combined_at
        total.events, total.fees = events, min(fees, INT64_MAX)
        total.partition, total.offset, total.index = partition, offset, index
    if seen_values is not None:
        seen_values.add(value)
    return Verdict.APPLIED


def _weigh(
    self: UsageState, packed: int, mark: bytes, key: TotalKey, value: int, *, limit: int,
    at: int, until: int, per_ms: int,
) -> Verdict:  # fmt: skip
    """A weighted sum: the integral so far (value × ms) grows by the last value times the
    time since it, the new value holds from ``at``; the limit bounds the billed quantity,
    the value held to ``until``, in ``per_ms`` units rounded half up."""
    total = self.totals.get(key)
    if total is not None and at < total.at:
        self.refused[packed] = OUT_OF_ORDER
        return Verdict.OUT_OF_ORDER
    integral = 0 if total is None else total.quantity + total.last * (at - total.at)
    held = integral + value * max(0, until - at)
    if integral > INT64_MAX or (2 * held + per_ms) // (2 * per_ms) > limit:
        self.refused[packed] = OVER_LIMIT
        return Verdict.OVER_LIMIT
    self.marks[mark] = packed
    partition, offset, index = unpack(packed)
    events = 1 if total is None else total.events + 1
    self.totals[key] = Total(integral, partition, offset, index, at, events, 0, value)
    return Verdict.APPLIED


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
    ends: int  # ms: the period's end, or the next version's first day (issue 20)


class BatchProcessor:
    def __init__(
        self,
        state: UsageState,
        subscription_of: Callable[[Owner], Terms | None],
        book: PriceBook,
        charges: ChargeTable,
        *,
        window: EventWindow,
        partitions: int,
    ) -> None:
        self.state = state
        # (tenant, subscription) -> the terms it is billed by, or None when it is unknown
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
        self._ends: dict[TotalKey, int] = {}  # each total's slice end (ms), as last counted
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
        period = Period.of(day, anchor)
        starts = [v.effective_from for v in self.book.versions_of(plan.id)
                  if v.version > plan.version and v.effective_from is not None]  # fmt: skip
        ends = min([period.end, *starts])
        return _PlanDay(plan, period.label, limits,
                        _millis(datetime(ends.year, ends.month, ends.day, tzinfo=UTC)))  # fmt: skip

    def process(
        self, records: Sequence[Record], copies: Set[tuple[int, int]] = frozenset()
    ) -> BatchResult:
        """Whole records only: a record is never split across two batches. This loop runs
        once per event, so what does not change within a record is looked up once.
        ``copies`` are the (partition, offset) of records a worker forwarded."""
        result = BatchResult()
        changed: dict[TotalKey, Plan] = {}
        state = self.state
        bounds = self.window.bounds()
        decoded = [decode_record(payload) for _, _, payload in records]
        # Every event's mark up front, so that marks kept on disk are read in one go.
        marks = [[dedupe_key(item) if isinstance(item, UsageEvent) else b"" for item in items]
                 for items in decoded]  # fmt: skip
        self.state.marks.prefetch([mark for record in marks for mark in record if mark])
        for (partition, offset, payload), items, record_marks in zip(
            records, decoded, marks, strict=True
        ):
            owner: Owner | None = None
            terms: Terms | None = None
            home = partition
            count = len(items)
            if not items:  # refused, so that every record is accounted for by a row
                result.rejected.append(Rejection(partition, offset, 0, refusals.EMPTY_RECORD.reason,
                                                 "the record holds no event", payload))  # fmt: skip
            for index, item in enumerate(items):
                if index >= MAX_RECORD_EVENTS:
                    detail = f"a record holds at most {MAX_RECORD_EVENTS} events"
                    result.rejected.append(Rejection(partition, offset, index,
                                                     refusals.RECORD_TOO_LARGE.reason, detail,
                                                     b"", count))  # fmt: skip
                    continue
                if isinstance(item, Undecodable):
                    result.rejected.append(Rejection(partition, offset, index,
                                                     refusals.MALFORMED.reason, item.detail,
                                                     item.payload, count))  # fmt: skip
                    continue
                if (item.tenant, item.subscription) != owner:
                    owner = (item.tenant, item.subscription)
                    home = self._home_partition(item)
                    terms = self.subscription_of(owner)
                if home != partition:
                    if (partition, offset) not in copies:
                        result.forwarded.append(
                            Forwarded(partition, offset, index, home, item, count)
                        )
                        continue
                    detail = (f"forwarded to partition {partition} as {item.tenant}/"
                              f"{item.subscription}'s, which this worker puts on {home}: "
                              "do the workers see one partition count?")  # fmt: skip
                    result.rejected.append(Rejection(partition, offset, index,
                                                     refusals.WRONG_PARTITION.reason, detail,
                                                     encode(item), count, item))  # fmt: skip
                    continue
                day = utc_day(item.timestamp)
                known = (
                    None
                    if terms is None
                    else self._plan_day(terms.plan_at(item.timestamp), day, terms.anchor_day)
                )
                refused = self.refusal(item, terms, known, day, bounds)
                if refused is not None:
                    reason, detail = refused
                    result.rejected.append(Rejection(partition, offset, index, reason, detail,
                                                     encode(item), count, item))  # fmt: skip
                    continue
                assert known is not None  # no refusal: the event has a plan in force
                mark = record_marks[index]
                group_by, aggregation, unique = self._meters[item.meter]
                group = self._group(item, group_by) if group_by else ""
                totals_key = TotalKey(
                    owner[0], owner[1], item.meter, known.period_start, known.plan.id,
                    known.plan.version, group,
                )  # fmt: skip
                limit = known.limits[item.meter]
                value = value_digest(item.properties[unique]) if unique else b""
                new_value = bool(unique) and not self.state.knows_value(totals_key, value)
                transactions = self.charges.refs[
                    self.charges.row(known.plan, item.meter)].transactions  # fmt: skip
                timed = aggregation in (Aggregation.LATEST, Aggregation.WEIGHTED_SUM)
                verdict = apply(
                    state, Position(partition, offset, index), mark, totals_key, item.quantity,
                    limit=limit, aggregation=aggregation,
                    at=_millis(item.timestamp) if timed else 0,
                    value=value, transactions=transactions, until=known.ends,
                    per_ms=self.book.meter(item.meter).per_ms,
                )  # fmt: skip
                self._ends[totals_key] = known.ends
                if verdict is Verdict.OUT_OF_ORDER:
                    stamped = datetime.fromtimestamp(state.totals[totals_key].at / 1000, UTC)
                    detail = (
                        f"meter {item.meter!r} weighs a gauge over time, and {owner[1]!r} "
                        f"reported a value stamped {stamped.isoformat()} already; this one is "
                        f"stamped {item.timestamp.isoformat()}: a gauge's reports count in "
                        "time order"
                    )
                    result.rejected.append(Rejection(partition, offset, index,
                                                     refusals.OUT_OF_ORDER.reason, detail,
                                                     encode(item), count, item))  # fmt: skip
                    continue
                if verdict is Verdict.DUPLICATE:
                    result.repeated.append(
                        AcceptedEvent(partition, offset, index, item, mark, count)
                    )
                    continue
                if verdict is Verdict.OVER_LIMIT:
                    # Since issue 20 the detail names the cap, and a percentage's fees.
                    cap = f"{from_nanos(INT64_MAX):f} {known.plan.currency}"
                    if transactions is not None:
                        detail = (
                            f"the fees {known.plan.label} accrues on meter {item.meter!r} of "
                            f"{owner[1]!r} would pass {cap} this period, the most one rated "
                            "total holds in 64-bit nano-units"
                        )
                    else:
                        detail = (
                            f"meter {item.meter!r} of {owner[1]!r} would pass {limit} units "
                            f"this period, beyond what {known.plan.label} can bill in 64-bit "
                            f"nano-units (at most {cap} for one rated total)"
                        )
                    result.rejected.append(Rejection(partition, offset, index,
                                                     refusals.AMOUNT_OVERFLOW.reason, detail,
                                                     encode(item), count, item))  # fmt: skip
                    continue
                result.accepted.append(AcceptedEvent(partition, offset, index, item, mark, count))
                if new_value:
                    result.distinct.append((totals_key, partition, value))
                if verdict is Verdict.APPLIED:
                    changed[totals_key] = known.plan
        self.state.marks.flush()
        began = time.perf_counter()
        result.rated = self._rate(list(changed.items()))
        result.rating_seconds = time.perf_counter() - began
        return result

    def refusal(
        self,
        event: UsageEvent,
        terms: Terms | None,
        known: _PlanDay | None,
        day: date,
        bounds: tuple[datetime, datetime],
    ) -> tuple[str, str] | None:
        """Why the event cannot be billed, as (reason, detail for people), or None: the
        rules of ``refusals.EVENT_RULES`` in their order (the state checks the last, the
        amount, as it counts the event). It runs once per event: the common case, no
        refusal, is a handful of comparisons. An event on another partition than its
        subscription's is not judged here but forwarded (``model.Forwarded``), or refused
        in ``process`` if it is a forwarded copy already."""
        if terms is None:
            return refusals.UNKNOWN_SUBSCRIPTION.reason, (
                f"no subscription {event.subscription!r} for tenant {event.tenant!r}"
            )
        ends = terms.ended_at
        if ends is not None and event.timestamp >= ends:
            return refusals.SUBSCRIPTION_ENDED.reason, (
                f"{event.tenant}/{event.subscription} ended at {ends.isoformat()}; the event "
                f"is stamped {event.timestamp.isoformat()}"
            )
        if known is None:
            plan_id = terms.plan_at(event.timestamp)
            return refusals.PLAN_NOT_IN_FORCE.reason, (
                f"plan {plan_id!r} has no version in force on {day}"
            )
        if event.meter not in known.limits:
            return refusals.UNPRICED_METER.reason, (
                f"meter {event.meter!r} is not priced by {known.plan.label}"
            )
        if event.quantity < 0:
            return refusals.NEGATIVE_QUANTITY.reason, f"quantity {event.quantity} is negative"
        oldest, newest = bounds
        if not oldest <= event.timestamp <= newest:
            return self.window.problem(event.timestamp, bounds)  # too_old or in_future
        unique = self._unique.get(event.meter)
        if unique is not None and unique not in event.properties:
            return refusals.MISSING_PROPERTY.reason, (
                f"meter {event.meter!r} counts distinct values of the property {unique!r}, "
                "which the event does not have"
            )
        return None

    def _priced(self, key: TotalKey, total: Total) -> int:
        """The quantity priced: the aggregate, an average's mean (issue 20), a weighted
        sum's integral with the last value held to the slice's end (issue 20)."""
        meter = self.book.meter(key.meter)
        if meter.aggregation == "avg":
            return (2 * total.quantity + total.events) // (2 * total.events)
        if meter.aggregation == "weighted_sum":
            held = total.quantity + total.last * max(0, self._ends[key] - total.at)
            return (2 * held + meter.per_ms) // (2 * meter.per_ms)
        return total.quantity

    def _rate(self, changed: list[tuple[TotalKey, Plan]]) -> list[RatedTotal]:
        if not changed:
            return []
        keys = [key for key, _ in changed]
        plans = [plan for _, plan in changed]
        charge_index = np.fromiter(
            (self.charges.row(plan, key.meter) for key, plan in changed),
            dtype=np.int64,
            count=len(keys),
        )
        totals = [self.state.totals[key] for key in keys]
        quantities = [self._priced(key, t) for key, t in zip(keys, totals, strict=True)]
        # A percentage charge is rated from its accrued fees.
        rated = [
            t.fees if self.charges.refs[int(row)].transactions else q
            for row, t, q in zip(charge_index, totals, quantities, strict=True)
        ]
        amounts = rate(self.charges, charge_index, np.array(rated, dtype=np.int64))
        return [
            RatedTotal(
                tenant=key.tenant,
                subscription=key.subscription,
                meter=key.meter,
                group=key.group,
                period_start=key.period_start,
                plan=plan.id,
                plan_version=plan.version,
                currency=plan.currency,
                quantity=quantity,
                amount_nanos=int(amount),
                partition=total.partition,
                offset=total.offset,
                index=total.index,
                value_at=total.at,
                events=total.events,
                fees_nanos=total.fees,
                aggregate=total.quantity,
                last_value=total.last,
            )
            for key, plan, total, amount, quantity in zip(
                keys, plans, totals, amounts, quantities, strict=True
            )
        ]
