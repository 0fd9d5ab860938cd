"""Dedupe marks and period-to-date totals, and the one rule that makes replays harmless.

Every event of a subscription lives on one partition, in order. An event's
position is (partition, offset, index): the record's place in the partition and
the event's place in the record (a record may hold a batch of events). Each
dedupe mark remembers the position of the event that set it, and each total the
position of the last event it absorbed. So when a worker restarts from an older
committed offset and sees an event again:

* a mark with a *different* position means a true duplicate: skip;
* a total whose position is already at or past the event's means its effect is
  already counted: do not add it again (but keep the mark).

It therefore does not matter which of a batch's writes survived a crash: the
state rebuilt from whatever was written converges to the same totals. (A batch
always holds whole records, so a total written at the end of a batch covers
every event of its key up to its position.)

A unique count also keeps, per total, the set of distinct values it has seen (8-byte
digests). Adding to a set is idempotent, and a total's count is the size of its set, so
replays cannot inflate it; what must hold is that a durable total never counts a value
its durable set lacks. So a batch's new values are written before anything else of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date
from enum import Enum
from typing import NamedTuple

import msgspec

from aggregation.marks import Marks, pack, unpack
from aggregation.model import Position, TotalKey
from base.events import UsageEvent
from rating.money import INT64_MAX
from rating.transactions import TransactionFees


class Verdict(Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REPLAYED = "replayed"
    OVER_LIMIT = "over_limit"  # would take the total past what can be rated: not applied
    OUT_OF_ORDER = "out_of_order"  # a gauge's report older than one already counted


class Aggregation(Enum):
    """How a meter combines its events' quantities over a period."""

    SUM = "sum"
    COUNT = "count"  # events, whatever their quantity
    MAX = "max"  # the largest quantity seen
    MIN = "min"  # the smallest quantity seen (the lowest balance, the fewest seats)
    LATEST = "latest"  # the quantity of the latest event by timestamp (a gauge: seats)
    AVG = "avg"  # the mean quantity of the period's events, rounded half up (``average``)
    # A gauge's value over time: each report's value held until the next, the last one's
    # until the total's slice ends (``weighted``).
    WEIGHTED_SUM = "weighted_sum"
    UNIQUE_COUNT = "unique_count"  # distinct values of one property (active users)


# A verdict as ``apply_many`` gives it: an index into VERDICTS, the billed ones first (an
# event is billed when its verdict is at most REPLAYED).
VERDICTS = (Verdict.APPLIED, Verdict.REPLAYED, Verdict.DUPLICATE, Verdict.OVER_LIMIT,
            Verdict.OUT_OF_ORDER)  # fmt: skip
APPLIED, REPLAYED, DUPLICATE, OVER_LIMIT, OUT_OF_ORDER = range(5)
_SUM, _COUNT, _UNIQUE = Aggregation.SUM, Aggregation.COUNT, Aggregation.UNIQUE_COUNT
_AVG, _WEIGHTED = Aggregation.AVG, Aggregation.WEIGHTED_SUM


class Counted(NamedTuple):
    """A batch's events to count, in order, one list per attribute (``apply_many``)."""

    packed: list[int]  # each event's packed position (``marks.pack``)
    marks: list[bytes]  # its dedupe mark
    keys: list[TotalKey]  # the total it counts into
    quantities: list[int]
    limits: list[int]  # the largest total its charge can rate
    aggregations: list[Aggregation]  # its meter's
    # Its timestamp in ms where the meter keeps the latest value or weighs a gauge, else 0.
    ats: list[int]
    values: list[bytes]  # the digest of the value a unique count counts, else b""
    # Its charge's rule per transaction where the charge is a percentage, else None.
    transactions: list[TransactionFees | None]
    # For a weighted sum: when its total's slice ends (ms), to which the last value holds.
    ends: list[int]


class Counts(NamedTuple):
    """What ``apply_many`` made of a batch's events."""

    verdicts: list[int]  # each event's, an index into VERDICTS
    new_values: list[bool]  # whether it brought its unique count a value not seen before
    totals: list[Total]  # the total of each event APPLIED, in order


class Total(msgspec.Struct, gc=False):
    """A period-to-date total and the position of the last event it absorbed. A struct
    the collector does not track (it holds only ints): a worker keeps millions, and one
    is made for every new total, in C rather than by a dataclass's Python __init__."""

    quantity: int  # the aggregate: a sum (an average's too), a count, a maximum, a minimum
    partition: int  # or the latest value
    offset: int
    index: int = 0
    at: int = 0  # for LATEST: the timestamp (ms) of the event whose value it holds
    events: int = 0  # how many events it absorbed
    fees: int = 0  # under a percentage charge: the fees accrued so far, in nano-units
    # For a weighted sum: the gauge's latest value. ``quantity`` then holds the integral
    # up to ``at`` (value × ms), and ``weighted`` adds this value held to a slice's end.
    last: int = 0


def dedupe_key(event: UsageEvent) -> bytes:
    """A fixed 16-byte digest of (tenant, source, id, meter): bounded memory however long the
    ids. The meter is part of it because one event may feed several meters (a model call's
    input and output tokens), and each of those contributions counts once."""
    identity = f"{event.tenant}\x1f{event.source}\x1f{event.id}\x1f{event.meter}".encode()
    return hashlib.blake2b(identity, digest_size=16).digest()


def value_digest(value: object) -> bytes:
    """8 bytes standing for a property value a unique count counts: one in 2^64 chance
    that two distinct values of one total collide, for bounded memory per value."""
    return hashlib.blake2b(repr(value).encode(), digest_size=8).digest()


def weighted(integral: int, last: int, at: int, until: int, unit_ms: int) -> int:
    """A gauge's value over time in the meter's units × ``unit_ms`` (an hour: GB-hours):
    the ``integral`` (value × ms) up to ``at``, the ``last`` value held from then until
    ``until`` (ms), divided by the unit and rounded half up."""
    total = integral + last * max(0, until - at)
    return (2 * total + unit_ms) // (2 * unit_ms)


def weighted_limit(limit: int, unit_ms: int) -> int:
    """The largest integral (value × ms) that ``weighted`` rounds to at most ``limit``."""
    return limit * unit_ms + (unit_ms + 1) // 2 - 1


def average(total: int, events: int) -> int:
    """The mean of ``events`` quantities summing to ``total``, rounded half up to the
    meter's scale (0 without events)."""
    return (2 * total + events) // (2 * events) if events else 0


def _combine(total: Total, value: int, aggregation: Aggregation, at: int) -> tuple[int, int]:
    """(aggregate, its timestamp) once ``value`` stamped ``at`` joins ``total``."""
    if aggregation is Aggregation.MAX:
        return max(total.quantity, value), total.at
    if aggregation is Aggregation.MIN:
        return min(total.quantity, value), total.at
    if aggregation is Aggregation.LATEST:
        # On a tie the event further along the partition wins, which this one is.
        return (value, at) if at >= total.at else (total.quantity, total.at)
    return total.quantity + value, total.at


# The refusals a replay must repeat, by the reason they are stored under.
_REFUSED = {"amount_overflow": OVER_LIMIT, "out_of_order": OUT_OF_ORDER}


class UsageState:
    def __init__(self, marks: Marks | None = None) -> None:
        # digest -> packed position, in two generations (an empty Marks is falsy: no "or")
        self.marks = Marks() if marks is None else marks
        self.totals: dict[TotalKey, Total] = {}
        # Packed positions of events refused as OVER_LIMIT or OUT_OF_ORDER, with which. Such
        # an event leaves no mark, and a total that moved past its position would otherwise
        # take its replay for one already counted; the store keeps them (rejected_events)
        # for a restart.
        self.refused: dict[int, int] = {}
        # Unique counts: total -> (its partition, digests of the distinct values seen).
        self.distinct: dict[TotalKey, tuple[int, set[bytes]]] = {}

    def position_of(self, mark: bytes) -> Position | None:
        packed = self.marks.get(mark)
        return None if packed is None else unpack(packed)

    def apply(
        self,
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
    ) -> Verdict:
        """One event through ``apply_many``: its verdict."""
        verdicts, _, _ = self.apply_many(
            Counted([pack(position)], [mark], [totals_key], [quantity], [limit],
                    [aggregation], [at], [value], [transactions], [until])
        )  # fmt: skip
        return VERDICTS[verdicts[0]]

    def apply_many(self, counted: Counted) -> Counts:
        """Count each event once into its total, in order, unless the total would pass
        the event's limit, or its accrued fees 64 bits (then nothing changes, the mark
        included, so the decision is the same on replay). A percentage charge's fee for
        the event is accrued in the same step (``rating.transactions``)."""
        # One loop for a whole batch, with the marks read in one go before it: the batch
        # step's per-event cost is mostly Python calls, and this makes none per event in
        # the common case (a sum).
        seen_marks = self.marks.get_many(counted.marks)
        fresh: dict[bytes, int] = {}  # marks set by this batch, which a later event may repeat
        totals, refused, distinct = self.totals, self.refused, self.distinct
        verdicts: list[int] = []
        new_values: list[bool] = []
        applied: list[Total] = []
        add, add_new, add_total = verdicts.append, new_values.append, applied.append
        for packed, mark, stored, key, quantity, limit, aggregation, at, value, rule, until in zip(
            counted.packed, counted.marks, seen_marks, counted.keys, counted.quantities,
            counted.limits, counted.aggregations, counted.ats, counted.values,
            counted.transactions, counted.ends, strict=True,
        ):  # fmt: skip
            if refused and packed in refused:
                add(refused[packed])
                add_new(False)
                continue
            seen = fresh.get(mark, stored)
            if seen is not None and seen != packed:
                add(DUPLICATE)
                add_new(False)
                continue
            partition, offset, index = packed & 0xFFFF, packed >> 32, (packed >> 16) & 0xFFFF
            seen_values = None
            if aggregation is _UNIQUE:
                seen_values = distinct.setdefault(key, (partition, set()))[1]
                # The set may hold values the stored total had not counted yet (module doc).
                new = value not in seen_values
                amount = len(seen_values) + new
            else:
                new = False
                amount = 1 if aggregation is _COUNT else quantity
            total = totals.get(key)
            if (
                total is not None
                and total.partition == partition
                and (total.offset, total.index) >= (offset, index)
            ):
                fresh[mark] = packed
                if seen_values is not None:
                    seen_values.add(value)
                add(REPLAYED)
                add_new(new)
                continue
            last = 0
            if aggregation is _WEIGHTED:  # the integral so far, and the new value from here
                if total is not None and at < total.at:
                    refused[packed] = OUT_OF_ORDER
                    add(OUT_OF_ORDER)
                    add_new(False)
                    continue
                combined, combined_at, last = 0, at, quantity
                events, fees = 1, 0
                if total is not None:
                    combined += total.quantity + total.last * (at - total.at)
                    events = total.events + 1
            elif total is None:
                combined, combined_at, events, fees = amount, at, 1, 0
            else:
                events, fees = total.events + 1, total.fees
                if aggregation is _SUM:  # the common case, without a call
                    combined, combined_at = total.quantity + amount, total.at
                elif seen_values is not None:
                    combined, combined_at = amount, total.at
                else:
                    combined, combined_at = _combine(total, amount, aggregation, at)
            over = combined > limit
            if aggregation is _AVG:  # the limit bounds what is priced, the mean
                over = combined > INT64_MAX or average(combined, events) > limit
            elif aggregation is _WEIGHTED:  # and here the value held to the slice's end
                over = combined > INT64_MAX or combined + last * max(0, until - at) > limit
            if rule is not None:
                fees += rule.fee(events - 1, 0 if total is None else total.quantity, quantity)
                if fees > INT64_MAX:  # beyond 64 bits a charge with a maximum bills that
                    fees, over = INT64_MAX, over or not rule.saturates
            if over:
                refused[packed] = OVER_LIMIT
                add(OVER_LIMIT)
                add_new(False)
                continue
            fresh[mark] = packed
            if total is None:
                total = totals[key] = Total(combined, partition, offset, index, combined_at,
                                            events, fees, last)  # fmt: skip
            else:
                total.quantity, total.at, total.events, total.fees, total.last = (
                    combined, combined_at, events, fees, last
                )  # fmt: skip
                total.partition, total.offset, total.index = partition, offset, index
            if seen_values is not None:
                seen_values.add(value)
            add(APPLIED)
            add_new(new)
            add_total(total)
        self.marks.set_many(fresh)
        return Counts(verdicts, new_values, applied)

    def knows_value(self, totals_key: TotalKey, value: bytes) -> bool:
        entry = self.distinct.get(totals_key)
        return entry is not None and value in entry[1]

    def restore(
        self,
        marks: Iterable[tuple[bytes, Position]],
        totals: Iterable[tuple[TotalKey, Total]],
        refused: Iterable[tuple[Position, str]] = (),
        distinct: Iterable[tuple[TotalKey, int, bytes]] = (),
        partitions: set[int] | None = None,
    ) -> None:
        """Replace the state of ``partitions`` (by default, every partition) with what the
        store holds of them, before processing resumes."""
        held = self.marks.forgotten if partitions is None else partitions
        self.marks.restore(((mark, pack(position)) for mark, position in marks), held)
        self.totals.update(totals)
        self.refused.update((pack(position), _REFUSED[reason]) for position, reason in refused)
        for key, partition, value in distinct:
            self.distinct.setdefault(key, (partition, set()))[1].add(value)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop what another worker may now change, so it is reloaded if it comes back."""
        self.marks.forget(partitions)
        self.totals = {k: v for k, v in self.totals.items() if v.partition not in partitions}
        self.refused = {p: v for p, v in self.refused.items() if unpack(p)[0] not in partitions}
        self.distinct = {k: v for k, v in self.distinct.items() if v[0] not in partitions}

    def rotate_marks(self) -> int:
        """Start a new generation of marks; return how many marks were forgotten. Refusals
        matter only to replays, which come from the last commit: they go too."""
        forgotten = self.marks.rotate()
        self.refused = {}
        return forgotten

    def forget_totals_before(self, period_start: date) -> int:
        """Drop totals of periods before ``period_start``, which no accepted event can
        reach any more; return how many were dropped."""
        kept = {
            key: total for key, total in self.totals.items() if key.period_start >= period_start
        }
        dropped = len(self.totals) - len(kept)
        self.totals = kept
        self.distinct = {k: v for k, v in self.distinct.items() if k.period_start >= period_start}
        return dropped
