"""Dedupe and period-to-date totals, including what a crash and a replay leave behind."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.marks import Marks, disk_generations
from aggregation.model import Position, TotalKey
from aggregation.state import (
    OUT_OF_ORDER,
    Aggregation,
    Total,
    UsageState,
    Verdict,
    average,
    dedupe_key,
    unpack,
    value_digest,
    weighted,
    weighted_limit,
)
from base.events import UsageEvent
from rating.money import INT64_MAX
from rating.oracle import transaction_fees
from rating.period import Period
from rating.plans import Percentage
from rating.transactions import TransactionFees


def event(
    event_id: str, quantity: int = 1, subscription: str = "s1", source: str = "svc"
) -> UsageEvent:
    return UsageEvent(
        id=event_id, tenant="t", subscription=subscription, meter="calls",
        quantity=quantity, timestamp=datetime(2026, 10, 5, tzinfo=UTC), source=source,
    )  # fmt: skip


def total_key(e: UsageEvent, plan_version: int) -> TotalKey:
    return TotalKey(
        e.tenant,
        e.subscription,
        e.meter,
        Period.of(e.timestamp.date()).start,
        "pro",
        plan_version,
        "",
    )


def apply(state: UsageState, partition: int, offset: int, e: UsageEvent, index: int = 0) -> Verdict:
    return state.apply(
        Position(partition, offset, index), dedupe_key(e), total_key(e, 1), e.quantity
    )


def test_a_new_event_is_applied_to_its_period_total() -> None:
    state = UsageState()
    assert apply(state, 0, 0, event("a", 5)) is Verdict.APPLIED
    assert state.totals[total_key(event("a"), 1)] == Total(5, 0, 0, 0, events=1)


def test_the_same_event_at_another_offset_is_a_duplicate_and_not_counted() -> None:
    state = UsageState()
    apply(state, 0, 0, event("a", 5))
    assert apply(state, 0, 7, event("a", 5)) is Verdict.DUPLICATE
    assert state.totals[total_key(event("a"), 1)].quantity == 5


def test_the_same_id_from_another_source_is_a_different_event() -> None:
    state = UsageState()
    apply(state, 0, 0, event("a", 5, source="one"))
    assert apply(state, 0, 1, event("a", 5, source="two")) is Verdict.APPLIED
    assert state.totals[total_key(event("a"), 1)].quantity == 10


def test_an_event_replayed_at_its_own_offset_after_its_total_was_saved_is_not_counted_again() -> (
    None
):
    state = UsageState()
    apply(state, 0, 0, event("a", 5))
    apply(state, 0, 1, event("b", 2))
    restarted = UsageState()
    restarted.restore([], state.totals.items())  # the marks were lost, the total survived
    assert apply(restarted, 0, 0, event("a", 5)) is Verdict.REPLAYED
    assert apply(restarted, 0, 1, event("b", 2)) is Verdict.REPLAYED
    assert restarted.totals[total_key(event("a"), 1)].quantity == 7


def test_an_event_whose_mark_survived_but_whose_total_did_not_is_counted_on_replay() -> None:
    state = UsageState()
    apply(state, 0, 0, event("a", 5))
    restarted = UsageState()
    restarted.restore([(dedupe_key(event("a")), Position(0, 0, 0))], [])
    assert apply(restarted, 0, 0, event("a", 5)) is Verdict.APPLIED
    assert restarted.totals[total_key(event("a"), 1)].quantity == 5


def test_dedupe_keys_are_sixteen_bytes_whatever_the_id_length() -> None:
    assert len(dedupe_key(event("x" * 10_000))) == 16


def test_forgetting_a_partition_keeps_the_others() -> None:
    state = UsageState()
    apply(state, 0, 0, event("a", subscription="s0"))
    apply(state, 1, 0, event("b", subscription="s1"))
    state.forget_partitions({0})
    assert {t.partition for t in state.totals.values()} == {1}
    assert {state.position_of(mark)[0] for mark in state.marks} == {1}  # type: ignore[index]


def test_a_mark_is_remembered_for_one_rotation_of_the_window_and_forgotten_at_the_next() -> None:
    state = UsageState()
    apply(state, 0, 0, event("a", 5))
    assert state.rotate_marks() == 0
    assert apply(state, 0, 1, event("a", 5)) is Verdict.DUPLICATE  # still within the window
    assert state.rotate_marks() == 1
    assert apply(state, 0, 2, event("a", 5)) is Verdict.APPLIED  # the window has passed
    assert state.totals[total_key(event("a"), 1)].quantity == 10


def test_totals_of_closed_periods_are_dropped_and_open_ones_kept() -> None:
    state = UsageState()
    apply(state, 0, 0, event("a"))
    september = UsageEvent(id="s", tenant="t", subscription="s1", meter="calls", quantity=1,
                           timestamp=datetime(2026, 9, 30, tzinfo=UTC), source="svc")  # fmt: skip
    apply(state, 0, 1, september)
    assert state.forget_totals_before(date(2026, 10, 1)) == 1
    assert [key.period_start for key in state.totals] == [date(2026, 10, 1)]


def test_each_aggregation_combines_the_distinct_events_of_a_period() -> None:
    results = {}
    for aggregation in Aggregation:
        state = UsageState()
        # (id, quantity, timestamp in ms, user): "c" arrives last but was measured first.
        for offset, (event_id, quantity, at, user) in enumerate(
            [("a", 4, 10, "ann"), ("b", 9, 20, "bob"), ("a", 4, 10, "ann"), ("c", 2, 5, "ann")]
        ):
            e = event(event_id, quantity)
            state.apply(Position(0, offset, 0), dedupe_key(e), total_key(e, 1), quantity,
                        aggregation=aggregation, at=at, value=value_digest(user))  # fmt: skip
        (total,) = state.totals.values()
        results[aggregation] = total.quantity
        # A weighted sum refuses "c", measured before the values it already holds.
        assert total.events == (2 if aggregation is Aggregation.WEIGHTED_SUM else 3)
        if aggregation is Aggregation.AVG:
            assert average(total.quantity, total.events) == 5  # 15 / 3
        if aggregation is Aggregation.WEIGHTED_SUM:
            assert (total.last, total.at) == (9, 20)  # and 9 holds from 20 on
            assert weighted(total.quantity, total.last, total.at, 30, 10) == 13  # 40 + 90
    # An average keeps the sum (and the events), and prices the mean; a weighted sum
    # keeps the integral up to its last report: 4 held from 10 to 20.
    assert results == {
        Aggregation.SUM: 15, Aggregation.COUNT: 3, Aggregation.MAX: 9, Aggregation.MIN: 2,
        Aggregation.AVG: 15, Aggregation.LATEST: 9, Aggregation.UNIQUE_COUNT: 2,
        Aggregation.WEIGHTED_SUM: 40,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("total", "events", "mean"),
    [(0, 0, 0), (0, 3, 0), (10, 4, 3), (9, 4, 2), (1, 2, 1), (1, 3, 0), (2, 3, 1),
     (INT64_MAX, 1, INT64_MAX), (INT64_MAX, 2, 2**62)],
)  # fmt: skip
def test_an_average_rounds_half_up_to_the_meter_scale(total: int, events: int, mean: int) -> None:
    assert average(total, events) == mean


huge = st.one_of(st.integers(0, 1000), st.integers(0, INT64_MAX), st.just(INT64_MAX))


@settings(max_examples=500, deadline=None)
@given(total=huge, events=st.one_of(st.integers(1, 10), st.integers(1, INT64_MAX)))
def test_an_average_is_the_decimal_mean_rounded_half_up(total: int, events: int) -> None:
    with localcontext(prec=80):
        expected = (Decimal(total) / events).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert average(total, events) == int(expected)


@settings(max_examples=500, deadline=None)
@given(
    integral=huge, last=huge, at=st.integers(0, 2 * 10**12), held=st.integers(-10**6, 10**10),
    unit=st.sampled_from([1, 1_000, 60_000, 3_600_000, 86_400_000]),
)  # fmt: skip
def test_a_weighted_sum_is_the_decimal_integral_rounded_half_up_and_its_limit_exact(
    integral: int, last: int, at: int, held: int, unit: int
) -> None:
    """Zero, huge values and a slice that ends before the last report (nothing held)."""
    with localcontext(prec=80):
        exact = (Decimal(integral) + Decimal(last) * max(0, held)) / unit
        expected = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert weighted(integral, last, at, at + held, unit) == expected
    # The raw limit is exactly where the rounded quantity passes a limit.
    limit = expected
    assert weighted(weighted_limit(limit, unit), 0, 0, 0, unit) == limit
    assert weighted(weighted_limit(limit, unit) + 1, 0, 0, 0, unit) == limit + 1


def test_a_unique_count_rebuilt_from_stored_values_ahead_of_its_total_counts_each_once() -> None:
    """The values of a batch are stored before its total: after a crash between the two,
    the replay finds the values known and the count comes out right."""
    users = ["ann", "bob", "ann", "cy"]
    events = [event(f"e{i}") for i in range(len(users))]
    key = total_key(events[0], 1)

    def replay(state: UsageState, offsets: range) -> None:
        for offset in offsets:
            state.apply(Position(0, offset, 0), dedupe_key(events[offset]), key, 1,
                        aggregation=Aggregation.UNIQUE_COUNT,
                        value=value_digest(users[offset]))  # fmt: skip

    worker = UsageState()
    replay(worker, range(2))
    stored_total = Total(worker.totals[key].quantity, 0, 1, 0)  # written after batch one
    replay(worker, range(2, 4))
    assert worker.totals[key].quantity == 3
    # Batch two's values reached the store, its marks and total did not.
    restarted = UsageState()
    values = [(key, 0, value_digest(user)) for user in users]
    restarted.restore([], [(key, stored_total)], distinct=values)
    replay(restarted, range(2, 4))
    assert restarted.totals[key].quantity == 3


def test_events_batched_in_one_record_all_count_and_a_repeat_inside_it_is_a_duplicate() -> None:
    record = [event("a", 1), event("b", 2), event("a", 1), event("c", 4)]
    state = UsageState()
    verdicts = [apply(state, 0, 9, e, index) for index, e in enumerate(record)]
    assert verdicts == [Verdict.APPLIED, Verdict.APPLIED, Verdict.DUPLICATE, Verdict.APPLIED]
    assert state.totals[total_key(event("a"), 1)] == Total(7, 0, 9, 3, events=3)
    restarted = UsageState()
    restarted.restore([], state.totals.items())
    replayed = [apply(restarted, 0, 9, e, index) for index, e in enumerate(record)]
    assert replayed == [Verdict.REPLAYED, Verdict.REPLAYED, Verdict.DUPLICATE, Verdict.REPLAYED]
    assert restarted.totals[total_key(event("a"), 1)].quantity == 7


PERCENTAGE = "sum, under a percentage charge"
UNTIL = 400_000  # ms: where a weighted sum's slice ends, after every event of the stream
_money = st.sampled_from(["0", "0.01", "0.30", "0.50", "5"])
# Charges over amounts at scale 2 (0.00 to 10.00 in the stream below); a rate of 10^9 %
# makes 120 transactions' fees pass 64 bits of nano-units.
percentage_charges = st.builds(
    lambda rate, fixed, free_events, free_units, bounds, maximum: Percentage(
        model="percentage", meter="calls", rate=Decimal(rate), fixed_fee=Decimal(fixed),
        free_events=free_events,
        free_units=None if free_units is None else Decimal(free_units).scaleb(-2),
        per_transaction_minimum=bounds[0], per_transaction_maximum=bounds[1],
        maximum=maximum,
    ),
    st.sampled_from(["0", "2.9", "100", "1000000000"]), _money,
    st.one_of(st.none(), st.integers(0, 5)), st.one_of(st.none(), st.integers(0, 3000)),
    st.sampled_from([(None, None), (Decimal("0.50"), None), (None, Decimal("0.10")),
                     (Decimal("0.05"), Decimal("0.20"))]),
    st.sampled_from([None, Decimal(1000)]),
)  # fmt: skip

# A stream on one partition: (event id, quantity, subscription); ids repeat (duplicates).
streams = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 1000), st.sampled_from(["s1", "s2", "s3"])),
    min_size=1,
    max_size=120,
)


@pytest.mark.parametrize("home", ["memory", "disk"])
@settings(max_examples=400, deadline=None)
@given(
    stream=streams,
    record_sizes=st.lists(st.integers(1, 4), min_size=120, max_size=120),
    batch_size=st.integers(1, 12),
    crash=st.tuples(st.integers(0, 200), st.integers(0, 200)),
    written=st.lists(st.booleans(), min_size=60, max_size=60),
    limit=st.one_of(st.just(INT64_MAX), st.integers(0, 5000)),
    aggregation=st.sampled_from([*Aggregation, PERCENTAGE]),
    charge=percentage_charges,
)
def test_any_crash_and_any_replay_from_the_last_commit_give_the_exact_distinct_totals(
    marks_folder: Path,
    home: str,
    stream: list[tuple[int, int, str]],
    *,
    record_sizes: list[int],
    batch_size: int,
    crash: tuple[int, int],
    written: list[bool],
    limit: int,
    aggregation: Aggregation | str,
    charge: Percentage,
) -> None:
    """Events travel in records of one to four; a batch is whole records. Batches before
    the crash are durable; the crashed batch left any subset of its mark, refusal and
    total writes; the committed offset is any batch boundary up to the crashed batch. A
    restarted worker that reloads the store and replays ends with each distinct event
    counted exactly once (summed, counted, the largest kept or the latest kept), except
    those that would have taken their total past ``limit``, refused in stream order (a
    re-send of a refused event is judged again).
    With marks kept on disk, as with marks kept in memory. Under a percentage charge (a
    sum whose fees accrue per transaction) each distinct event's fee is accrued once,
    in stream order, as the Decimal oracle computes it; a total whose fees would pass 64
    bits refuses the event, unless the charge has a maximum."""
    transactions = TransactionFees.of(charge, 2) if aggregation == PERCENTAGE else None
    if aggregation == PERCENTAGE:
        aggregation = Aggregation.SUM
    assert isinstance(aggregation, Aggregation)
    folder = marks_folder / uuid.uuid4().hex

    def new_state(name: str) -> UsageState:
        return UsageState(Marks(disk_generations(folder / name)) if home == "disk" else Marks())

    first: dict[int, tuple[int, str]] = {}
    events = []
    for event_id, drawn_quantity, drawn_subscription in stream:
        # A duplicate repeats its original exactly, as a retrying producer does.
        quantity, subscription = first.setdefault(event_id, (drawn_quantity, drawn_subscription))
        events.append(event(f"e{event_id}", quantity, subscription))
    records: list[list[UsageEvent]] = []
    sizes = iter(record_sizes)
    while sum(map(len, records)) < len(events):
        start = sum(map(len, records))
        records.append(events[start : start + next(sizes)])
    # Each occurrence's timestamp (ms) runs with its place in the stream, but a third of
    # the quantities step back in time: a gauge weighed over time refuses such a report.
    stamped = [1000 * offset + index + 1 - 1500 * (e.quantity % 3 == 1)
               for offset, record in enumerate(records)
               for index, e in enumerate(record)]  # fmt: skip
    place = {(offset, index): n for n, (offset, index) in enumerate(
        (o, i) for o, record in enumerate(records) for i in range(len(record)))}  # fmt: skip
    batches = [
        range(i, min(i + batch_size, len(records))) for i in range(0, len(records), batch_size)
    ]
    crash_batch = min(crash[0], len(batches) - 1)
    commit_batch = min(crash[1], crash_batch)

    def replay(
        state: UsageState, offsets: range, new_values: list[tuple[TotalKey, int, bytes]]
    ) -> set[tuple[object, ...]]:
        touched = set()
        for offset in offsets:
            for index, e in enumerate(records[offset]):
                key = total_key(e, 1)
                value = value_digest(e.quantity % 5)
                known = state.knows_value(key, value)
                verdict = state.apply(
                    (0, offset, index), dedupe_key(e), key, e.quantity, limit=limit,
                    aggregation=aggregation, at=stamped[place[(offset, index)]], value=value,
                    transactions=transactions, until=UNTIL,
                )  # fmt: skip
                if (
                    aggregation is Aggregation.UNIQUE_COUNT
                    and not known
                    and verdict in (Verdict.APPLIED, Verdict.REPLAYED)
                ):
                    new_values.append((key, 0, value))
                touched.add(key)
        state.marks.flush()  # as the batch step does at the end of each batch
        return touched

    worker = new_state("worker")
    stored_refusals: set[tuple[tuple[int, int, int], str]] = set()
    stored_marks: dict[bytes, tuple[int, int, int]] = {}
    stored_totals: dict[tuple[str, str, str, object, int], Total] = {}
    stored_values: list[tuple[TotalKey, int, bytes]] = []
    choice = iter(written * 10)
    for number, batch in enumerate(batches[: crash_batch + 1]):
        new_values: list[tuple[TotalKey, int, bytes]] = []
        touched = replay(worker, batch, new_values)
        crashed = number == crash_batch
        # A batch's new values are written first: if they did not survive, nothing did.
        if crashed and not next(choice):
            break
        stored_values.extend(new_values)
        for offset in batch:
            for e in records[offset]:
                key = dedupe_key(e)
                if key in worker.marks and (not crashed or next(choice)):
                    stored_marks[key] = worker.position_of(key)  # type: ignore[assignment]
        for packed, verdict in worker.refused.items():
            if not crashed or next(choice):
                reason = "out_of_order" if verdict == OUT_OF_ORDER else "amount_overflow"
                stored_refusals.add((unpack(packed), reason))
        for key in touched:
            if key in worker.totals and (not crashed or next(choice)):
                current = worker.totals[key]  # type: ignore[index]
                stored_totals[key] = Total(  # type: ignore[index]
                    current.quantity,
                    current.partition,
                    current.offset,
                    current.index,
                    current.at,
                    current.events,
                    current.fees,
                    current.last,
                )

    restarted = new_state("restarted")
    restarted.restore(stored_marks.items(), stored_totals.items(), stored_refusals, stored_values)
    replay(restarted, range(batches[commit_batch].start, len(records)), [])

    expected: dict[str, int] = {}
    distinct_values: dict[str, set[int]] = {}
    counted: dict[str, list[int]] = {}  # each subscription's events counted, in order
    # Every occurrence in stream order: a repeat of a counted event is a duplicate, but
    # a refused event leaves no mark, so its re-send is judged again (a smaller minimum
    # or mean may fit where the first one did not).
    counted_ids: set[int] = set()
    gauges: dict[str, tuple[int, int]] = {}  # a weighted sum's last value and its time
    latest_at: dict[str, int] = {}
    for occurrence, (event_id, _, _) in enumerate(stream):
        if event_id in counted_ids:
            continue
        quantity, subscription = first[event_id]
        at = stamped[occurrence]
        so_far = expected.get(subscription)
        amounts = [*counted.get(subscription, []), quantity]
        priced = None
        if aggregation is Aggregation.SUM:
            candidate = (so_far or 0) + quantity
        elif aggregation is Aggregation.COUNT:
            candidate = (so_far or 0) + 1
        elif aggregation is Aggregation.MAX:
            candidate = quantity if so_far is None else max(so_far, quantity)
        elif aggregation is Aggregation.MIN:
            candidate = quantity if so_far is None else min(so_far, quantity)
        elif aggregation is Aggregation.UNIQUE_COUNT:
            candidate = len(distinct_values.get(subscription, set()) | {quantity % 5})
        elif aggregation is Aggregation.AVG:  # the sum is kept; the limit bounds the mean
            candidate = (so_far or 0) + quantity
            mean = Decimal(candidate) / len(amounts)
            priced = int(mean.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        elif aggregation is Aggregation.WEIGHTED_SUM:  # value × ms, the last one held on
            if subscription in gauges and at < gauges[subscription][1]:
                continue  # out of time order: refused, and judged again if re-sent
            last, since = gauges.get(subscription, (0, at))
            candidate = (so_far or 0) + last * (at - since)
            priced = candidate + quantity * (UNTIL - at) if candidate <= INT64_MAX else limit + 1
        elif so_far is None or at >= latest_at[subscription]:  # LATEST: the later moment
            candidate = quantity  # (on a tie, the later event)
        else:
            candidate = so_far
        fees_fit = True
        if transactions is not None:
            accrued = sum(transaction_fees(charge, amounts, 2)).scaleb(9)
            fees_fit = accrued <= INT64_MAX or charge.maximum is not None
        if (candidate if priced is None else priced) <= limit and fees_fit:
            counted_ids.add(event_id)
            expected[subscription] = candidate
            counted[subscription] = amounts
            gauges[subscription] = (quantity, at)
            latest_at[subscription] = max(at, latest_at.get(subscription, at))
            distinct_values.setdefault(subscription, set()).add(quantity % 5)
    assert {k.subscription: t.quantity for k, t in restarted.totals.items()} == expected
    assert {k.subscription: t.events for k, t in restarted.totals.items()} == {
        subscription: len(amounts) for subscription, amounts in counted.items()
    }
    if transactions is not None:
        assert {k.subscription: t.fees for k, t in restarted.totals.items()} == {
            subscription: min(INT64_MAX, int(sum(transaction_fees(charge, amounts, 2)).scaleb(9)))
            for subscription, amounts in counted.items()
        }
