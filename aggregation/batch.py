"""One batch of Kafka records in, the rows to make durable out: a pure step, no I/O.

Validation, dedupe, aggregation and rating happen here; the worker only moves
records in and rows out, so every decision can be tested without a broker.

The step works on the batch as columns (issue 18): the records are decoded and flattened
into one list per attribute, the checks that pass for nearly every event are plain
comparisons in one loop, dedupe and totals
are counted in one loop of ``UsageState.apply_many``, and what is billed leaves as
columns (``model.EventRows``), not one object per event. Per-event Python that builds
explanations runs only for the events refused. ``tests/reference_step.py`` keeps the
earlier step, one event at a time, and a property requires the same rows from both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import compress
from operator import attrgetter

import numpy as np

from aggregation import refusals
from aggregation.marks import MAX_PARTITIONS, pack_all
from aggregation.model import (
    BatchResult,
    EventRows,
    Forwarded,
    RatedRows,
    Record,
    Rejection,
    TotalKey,
)
from aggregation.state import (
    APPLIED,
    DUPLICATE,
    OUT_OF_ORDER,
    OVER_LIMIT,
    REPLAYED,
    Aggregation,
    Counted,
    Counts,
    Total,
    UsageState,
    average,
    dedupe_key,
    value_digest,
    weighted,
    weighted_limit,
)
from base.events import (
    EPOCH,
    MAX_RECORD_EVENTS,
    MILLISECOND,
    EventWindow,
    Undecodable,
    UsageEvent,
    clean_events,
    decode_record,
    encode,
    group_key,
    millis,
    owner_key,
    partitions_of,
    utc_day,
)
from rating.money import INT64_MAX, from_nanos, plain
from rating.period import Period, midnight
from rating.plans import Plan, PriceBook
from rating.rater import rate
from rating.table import ChargeTable
from rating.transactions import TransactionFees
from subscriptions.model import Owner, Terms

_LATEST, _WEIGHTED = Aggregation.LATEST, Aggregation.WEIGHTED_SUM


@dataclass(frozen=True, slots=True)
class _PlanDay:
    """What one day means under one plan and anchor day: the version in force, the label
    of the billing period the day belongs to, and for each meter that version prices its
    row in the charge table and the largest period-to-date quantity its charge can rate."""

    plan: Plan
    period_start: date
    limits: dict[str, int]  # a weighted sum's in value × ms (``state.weighted_limit``)
    rows: dict[str, int]
    transactions: dict[str, TransactionFees]  # the rule of each percentage charge
    # When the slice of the period this version prices ends (ms): the period's end, or
    # the next version's first day. A weighted sum's last value holds until then.
    ends: int


@dataclass(slots=True)
class _Flat:
    """A batch's decoded events, one list per attribute, in the order of the log; and the
    refusals found while decoding, with the record number and index each sorts by."""

    events: list[UsageEvent] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    record_events: list[int] = field(default_factory=list)
    records: list[int] = field(default_factory=list)  # the number of its record in the batch
    rejected: list[tuple[int, int, Rejection]] = field(default_factory=list)

    def add(
        self,
        number: int,
        record: Record,
        items: list[UsageEvent],
        indices: Sequence[int],
        count: int,
    ) -> None:
        n = len(items)
        self.events += items
        self.indices += indices
        self.partitions += [record[0]] * n
        self.offsets += [record[1]] * n
        self.records += [number] * n
        self.record_events += [count] * n

    def refuse(self, number: int, rejection: Rejection) -> None:
        self.rejected.append((number, rejection.index, rejection))

    def without(self, dropped: list[int]) -> _Flat:
        """The events but those at ``dropped`` (ascending); itself when there are none."""
        if not dropped:
            return self
        keep = [True] * len(self.events)
        for i in dropped:
            keep[i] = False
        return _Flat(
            list(compress(self.events, keep)), list(compress(self.partitions, keep)),
            list(compress(self.offsets, keep)), list(compress(self.indices, keep)),
            list(compress(self.record_events, keep)), list(compress(self.records, keep)),
            self.rejected,
        )  # fmt: skip


_stamp = attrgetter("timestamp")


class BatchProcessor:
    def __init__(
        self,
        state: UsageState,
        subscriptions_of: Callable[[Sequence[Owner]], list[Terms | None]],
        book: PriceBook,
        charges: ChargeTable,
        *,
        window: EventWindow,
        partitions: int,
        catch_up: Callable[[datetime], None] | None = None,
    ) -> None:
        self.state = state
        # (tenant, subscription) of each event -> the terms it is billed by (None: unknown)
        self.subscriptions_of = subscriptions_of
        # Told the newest stamp of a batch before its terms are looked up: the directory
        # reads the store again if a change could take effect by then that it has not
        # seen (an immediate plan change, ``SubscriptionDirectory.catch_up``).
        self.catch_up = catch_up
        self.book = book
        self.charges = charges
        self.window = window
        if not 0 < partitions <= MAX_PARTITIONS:
            raise ValueError(f"the events topic can have 1 to {MAX_PARTITIONS} partitions")
        self.partitions = partitions  # of the events topic: where each subscription lives
        self._days: dict[tuple[str, date, int], _PlanDay | None] = {}
        self._home: dict[Owner, int] = {}
        # What the loop needs of each meter, in one lookup.
        self._meters = {
            m.id: (m.group_by, Aggregation(m.aggregation), m.unique) for m in book.meters
        }
        self._unique = {m.id: m.unique for m in book.meters if m.unique}
        self._averages = {m.id for m in book.meters if m.aggregation == "avg"}
        self._per_ms = {m.id: m.per_ms for m in book.meters if m.aggregation == "weighted_sum"}
        self._groups: dict[tuple[tuple[str, ...], tuple[object, ...]], str] = {}

    def _group(self, event: UsageEvent, names: tuple[str, ...]) -> str:
        """The event's group key, built once per distinct combination of values."""
        values = tuple(event.properties.get(name) for name in names)
        key = self._groups.get((names, values))
        if key is None:
            key = self._groups[(names, values)] = group_key(event.properties, names)
        return key

    def _homes(self, owners: list[Owner]) -> list[int]:
        """The partition of each owner's subscription, the ones not seen before computed
        together."""
        known = self._home
        new = [owner for owner in dict.fromkeys(owners) if owner not in known]
        if new:
            keys = [owner_key(tenant, subscription) for tenant, subscription in new]
            known.update(zip(new, partitions_of(keys, self.partitions), strict=True))
        return [known[owner] for owner in owners]

    def _plan_day(self, plan_id: str, day: date, anchor: int) -> _PlanDay | None:
        key = (plan_id, day, anchor)
        if key not in self._days:
            plan = self.book.plan_at(plan_id, day)
            self._days[key] = None if plan is None else self._describe(plan, day, anchor)
        return self._days[key]

    def _describe(self, plan: Plan, day: date, anchor: int) -> _PlanDay:
        rows = {charge.meter: self.charges.row(plan, charge.meter) for charge in plan.charges}
        refs = {meter: self.charges.refs[row] for meter, row in rows.items()}
        limits = {
            meter: weighted_limit(ref.max_quantity, self._per_ms[meter])
            if meter in self._per_ms else ref.max_quantity
            for meter, ref in refs.items()
        }  # fmt: skip
        rules = {meter: ref.transactions for meter, ref in refs.items() if ref.transactions}
        period = Period.of(day, anchor)
        ends = period.end
        for later in self.book.versions_of(plan.id):
            starts = later.effective_from
            if later.version > plan.version and starts is not None and starts < ends:
                ends = starts
                break
        return _PlanDay(plan, period.label, limits, rows, rules, millis(midnight(ends)))

    def _flatten(self, records: Sequence[Record]) -> _Flat:
        """Decode every record. A whole batch of valid events (the common case) joins the
        columns in a few list operations; a record with a fault is taken item by item."""
        flat = _Flat()
        for number, record in enumerate(records):
            items = clean_events(record[2])
            if items is not None and 0 < len(items) <= MAX_RECORD_EVENTS:
                flat.add(number, record, items, range(len(items)), len(items))
            else:
                self._flatten_faulty(flat, number, record)
        return flat

    def _flatten_faulty(self, flat: _Flat, number: int, record: Record) -> None:
        partition, offset, payload = record
        items = decode_record(payload)
        count = len(items)
        if not items:  # refused, so that every record is accounted for by a row
            flat.refuse(number, Rejection(partition, offset, 0, refusals.EMPTY_RECORD.reason,
                                          "the record holds no event", payload))  # fmt: skip
        good, places = [], []
        for index, item in enumerate(items):
            if index >= MAX_RECORD_EVENTS:
                detail = f"a record holds at most {MAX_RECORD_EVENTS} events"
                flat.refuse(number, Rejection(partition, offset, index,
                                              refusals.RECORD_TOO_LARGE.reason, detail, b"",
                                              count))  # fmt: skip
            elif isinstance(item, Undecodable):
                flat.refuse(number, Rejection(partition, offset, index, refusals.MALFORMED.reason,
                                              item.detail, item.payload, count))  # fmt: skip
            else:
                good.append(item)
                places.append(index)
        flat.add(number, record, good, places, count)

    def process(
        self, records: Sequence[Record], copies: Set[tuple[int, int]] = frozenset()
    ) -> BatchResult:
        """Whole records only: a record is never split across two batches. ``copies`` are
        the (partition, offset) of records a worker forwarded."""
        flat = self._flatten(records)
        result = BatchResult()
        events = flat.events
        owners = [(e.tenant, e.subscription) for e in events]
        homes = self._homes(owners)
        if self.catch_up is not None and events:
            self.catch_up(max(map(_stamp, events)))
        terms_of = self.subscriptions_of(owners)
        bounds = oldest, newest = self.window.bounds()
        meters, unique_of, plan_day = self._meters, self._unique, self._days.get
        keys: list[TotalKey] = []
        limits: list[int] = []
        aggregations: list[Aggregation] = []
        ats: list[int] = []
        values: list[bytes] = []
        rules: list[TransactionFees | None] = []
        ends: list[int] = []
        known_of: list[_PlanDay] = []
        dropped: list[int] = []  # events forwarded or refused before they are counted
        for i, (event, owner, home, partition, terms) in enumerate(
            zip(events, owners, homes, flat.partitions, terms_of, strict=True)
        ):
            moment = event.timestamp
            day = utc_day(moment)
            if home != partition:
                self._misplaced(flat, result, i, home, copies)
                dropped.append(i)
                continue
            known = limit = None
            if terms is not None:
                plan_id = terms.plan_at(moment) if terms.changes else terms.plan
                key = (plan_id, day, terms.anchor_day)
                known = plan_day(key) if key in self._days else self._plan_day(*key)
                if known is not None:
                    limit = known.limits.get(event.meter)
            # The rules of refusals.EVENT_RULES as plain comparisons, for a yes or no;
            # ``refusal`` then says which rule and why.
            if limit is None or event.quantity < 0 or not oldest <= moment <= newest:
                self._refuse(flat, i, terms=terms, known=known, day=day, bounds=bounds)
                dropped.append(i)
                continue
            assert terms is not None and known is not None  # a limit was found
            counts_values = unique_of.get(event.meter) if unique_of else None
            if (terms.ended_at is not None and moment >= terms.ended_at) or (
                counts_values is not None and counts_values not in event.properties
            ):
                self._refuse(flat, i, terms=terms, known=known, day=day, bounds=bounds)
                dropped.append(i)
                continue
            group_by, aggregation, unique = meters[event.meter]
            keys.append(TotalKey(
                owner[0], owner[1], event.meter, known.period_start, known.plan.id,
                known.plan.version, self._group(event, group_by) if group_by else "",
            ))  # fmt: skip
            limits.append(limit)
            aggregations.append(aggregation)
            timed = aggregation is _LATEST or aggregation is _WEIGHTED
            ats.append(millis(moment) if timed else 0)
            ends.append(known.ends if aggregation is _WEIGHTED else 0)
            values.append(value_digest(event.properties[unique]) if unique else b"")
            rules.append(known.transactions.get(event.meter) if known.transactions else None)
            known_of.append(known)
        counted = flat.without(dropped)
        marks = [dedupe_key(e) for e in counted.events]
        packed = pack_all(counted.partitions, counted.offsets, counted.indices)
        counting = Counted(packed, marks, keys, [e.quantity for e in counted.events], limits,
                           aggregations, ats, values, rules, ends)  # fmt: skip
        self.state.marks.prefetch(marks)
        counts = self.state.apply_many(counting)
        self.state.marks.flush()
        self._verdicts(result, flat, counted=counted, counting=counting, counts=counts,
                       known_of=known_of)  # fmt: skip
        result.rejected = [r for _, _, r in sorted(flat.rejected, key=lambda x: x[:2])]
        return result

    def _misplaced(
        self, flat: _Flat, result: BatchResult, i: int, home: int, copies: Set[tuple[int, int]]
    ) -> None:
        """An event on another partition than its subscription's: forwarded there, unless
        it is a forwarded copy already (then the workers disagree on the partitions)."""
        event, partition, offset = flat.events[i], flat.partitions[i], flat.offsets[i]
        index, count = flat.indices[i], flat.record_events[i]
        if (partition, offset) not in copies:
            result.forwarded.append(Forwarded(partition, offset, index, home, event, count))
            return
        detail = (f"forwarded to partition {partition} as {event.tenant}/"
                  f"{event.subscription}'s, which this worker puts on {home}: "
                  "do the workers see one partition count?")  # fmt: skip
        flat.refuse(flat.records[i], Rejection(partition, offset, index,
                                               refusals.WRONG_PARTITION.reason, detail,
                                               encode(event), count, event))  # fmt: skip

    def _refuse(
        self,
        flat: _Flat,
        i: int,
        *,
        terms: Terms | None,
        known: _PlanDay | None,
        day: date,
        bounds: tuple[datetime, datetime],
    ) -> None:
        event = flat.events[i]
        refused = self.refusal(event, terms, known, day, bounds)
        assert refused is not None, "the loop's checks and refusal() disagree"
        reason, detail = refused
        flat.refuse(flat.records[i], Rejection(flat.partitions[i], flat.offsets[i],
                                               flat.indices[i], reason, detail, encode(event),
                                               flat.record_events[i], event))  # fmt: skip

    def _verdicts(
        self,
        result: BatchResult,
        flat: _Flat,
        *,
        counted: _Flat,
        counting: Counted,
        counts: Counts,
        known_of: list[_PlanDay],
    ) -> None:
        """The rows of what was counted: billed events, duplicates, refusals of totals that
        would overflow, new distinct values, and the totals rated."""
        rows = EventRows(counted.events, counted.partitions, counted.offsets, counted.indices,
                         counted.record_events, counting.marks)  # fmt: skip
        verdicts = counts.verdicts
        if not verdicts or max(verdicts) <= REPLAYED:  # all billed, as nearly always
            result.accepted = rows
            applied = [verdict == APPLIED for verdict in verdicts]
        else:
            result.accepted = rows.select([verdict <= REPLAYED for verdict in verdicts])
            result.repeated = rows.select([verdict == DUPLICATE for verdict in verdicts])
            applied = [verdict == APPLIED for verdict in verdicts]
            for k in compress(range(len(verdicts)), [v >= OVER_LIMIT for v in verdicts]):
                reason, detail = self._state_refusal(verdicts[k], counted.events[k],
                                                     known_of[k], counting.keys[k])  # fmt: skip
                flat.refuse(counted.records[k], Rejection(
                    counted.partitions[k], counted.offsets[k], counted.indices[k], reason,
                    detail, encode(counted.events[k]), counted.record_events[k],
                    counted.events[k],
                ))  # fmt: skip
        keys = counting.keys
        result.distinct = [(keys[k], counted.partitions[k], value)
                           for k, value in compress(enumerate(counting.values),
                                                    counts.new_values)]  # fmt: skip
        changed = dict(zip(compress(keys, applied),
                           zip(compress(known_of, applied), counts.totals, strict=True),
                           strict=True))  # fmt: skip
        began = time.perf_counter()
        result.rated = self._rate(changed)
        result.rating_seconds = time.perf_counter() - began

    def _state_refusal(
        self, verdict: int, event: UsageEvent, known: _PlanDay, key: TotalKey
    ) -> tuple[str, str]:
        """Why the state refused to count the event, as (reason, detail for people)."""
        if verdict == OUT_OF_ORDER:
            latest = EPOCH + self.state.totals[key].at * MILLISECOND
            return refusals.OUT_OF_ORDER.reason, (
                f"meter {event.meter!r} weighs a gauge over time, and {event.subscription!r} "
                f"reported a value stamped {latest.isoformat()} already; this one is stamped "
                f"{event.timestamp.isoformat()}: a gauge's reports count in time order"
            )
        cap = f"{plain(from_nanos(INT64_MAX))} {known.plan.currency}"
        if event.meter in known.transactions:
            return refusals.AMOUNT_OVERFLOW.reason, (
                f"the fees {known.plan.label} accrues on meter {event.meter!r} of "
                f"{event.subscription!r} would pass {cap} this period, the most one rated "
                "total holds in 64-bit nano-units"
            )
        limit = self.charges.refs[known.rows[event.meter]].max_quantity
        return refusals.AMOUNT_OVERFLOW.reason, (
            f"meter {event.meter!r} of {event.subscription!r} would pass {limit} units this "
            f"period, beyond what {known.plan.label} can bill in 64-bit nano-units (at most "
            f"{cap} for one rated total)"
        )

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

    def _rate(self, changed: dict[TotalKey, tuple[_PlanDay, Total]]) -> RatedRows:
        """The totals ``changed`` by the batch, rated in one call of the kernel. Columns are
        copied out of the totals, which later batches go on changing."""
        if not changed:
            return RatedRows()
        days = [known for known, _ in changed.values()]
        totals = [total for _, total in changed.values()]
        keys = list(changed)
        aggregates = [t.quantity for t in totals]
        quantities = aggregates
        if self._averages or self._per_ms:
            quantities = [self._priced(k.meter, t, known.ends)
                          for k, t, known in zip(keys, totals, days, strict=True)]  # fmt: skip
        rated = quantities
        if any(known.transactions for known in days):  # a percentage charge bills its fees
            rated = [
                t.fees if k.meter in known.transactions else q
                for k, known, t, q in zip(keys, days, totals, quantities, strict=True)
            ]
        rows = (known.rows[key.meter] for key, known in zip(keys, days, strict=True))
        charge_index = np.fromiter(rows, dtype=np.int64, count=len(keys))
        amounts = rate(self.charges, charge_index, np.array(rated, dtype=np.int64))
        return RatedRows(keys, [known.plan.currency for known in days], quantities,
                         amounts.tolist(), [t.partition for t in totals],
                         [t.offset for t in totals], [t.index for t in totals],
                         [t.at for t in totals], aggregates, [t.events for t in totals],
                         [t.fees for t in totals], [t.last for t in totals])  # fmt: skip

    def _priced(self, meter: str, total: Total, ends: int) -> int:
        """The quantity a total's charge prices: its aggregate; an average's mean; a
        weighted sum's value over time, the last value held until the slice ends."""
        if meter in self._averages:
            return average(total.quantity, total.events)
        per_ms = self._per_ms.get(meter)
        if per_ms is not None:
            return weighted(total.quantity, total.last, total.at, ends, per_ms)
        return total.quantity
