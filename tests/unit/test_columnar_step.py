"""The columnar batch step against the step it replaced (``tests/reference_step.py``): on
random batches of random records (duplicates, every refusal, forwarded events and their
copies, broken records, plan changes, ends, anchors, every aggregation, groups, replays
after a crash, a log's later epoch), both give the same rows and leave the same state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.batch import BatchProcessor
from aggregation.log_identity import ordinal
from aggregation.marks import Marks, disk_generations
from aggregation.model import BatchResult, Record
from aggregation.state import UsageState
from base.events import EventWindow, UsageEvent, encode, encode_batch, partition_of
from rating.loading import parse_price_book
from rating.table import ChargeTable
from subscriptions.directory import fixed
from subscriptions.model import Terms
from tests import reference_step

NOW = datetime(2026, 10, 20, 12, tzinfo=UTC)
WINDOW = EventWindow(timedelta(days=35), timedelta(minutes=5), clock=lambda: NOW)
PARTITIONS = 3

BOOK = parse_price_book(
    {
        "meters": [
            {"id": "calls"},
            {"id": "requests", "aggregation": "count"},
            {"id": "peak", "aggregation": "max"},
            {"id": "low", "aggregation": "min"},
            {"id": "mean", "aggregation": "avg"},
            {"id": "disk", "aggregation": "weighted_sum", "scale": 3, "per": "minute"},
            {"id": "payments", "scale": 2},
            {"id": "seats", "aggregation": "latest"},
            {"id": "users", "aggregation": "unique_count", "unique": "user"},
            {"id": "tokens", "group_by": ["model"]},
            {"id": "storage"},
        ],
        "plans": [
            {"id": "basic", "currency": "USD", "charges": [
                {"meter": "calls", "model": "per_unit", "unit_price": "0.001"},
                {"meter": "requests", "model": "per_unit", "unit_price": "0.5"},
                {"meter": "peak", "model": "per_unit", "unit_price": "2"},
                {"meter": "low", "model": "per_unit", "unit_price": "4"},
                {"meter": "mean", "model": "per_unit", "unit_price": "3"},
                {"meter": "disk", "model": "per_unit", "unit_price": "0.0001"},
                {"meter": "payments", "model": "percentage", "rate": "2.9", "fixed_fee": "0.30",
                 "per_transaction_minimum": "0.50", "free_events": 2},
                {"meter": "seats", "model": "per_unit", "unit_price": "10"},
                {"meter": "users", "model": "per_unit", "unit_price": "3"},
                {"meter": "tokens", "model": "graduated", "tiers": [
                    {"up_to": 100, "unit_price": "0.01"}, {"unit_price": "0.005"}]},
            ]},
            {"id": "basic", "version": 2, "currency": "USD", "effective_from": "2026-10-10",
             "charges": [
                {"meter": "calls", "model": "per_unit", "unit_price": "0.002"},
                {"meter": "tokens", "model": "per_unit", "unit_price": "0.02"},
                {"meter": "storage", "model": "per_unit", "unit_price": "0.1"},
            ]},
            # Dear enough that a few large quantities pass what 64-bit nano-units can bill.
            {"id": "pricey", "currency": "EUR", "charges": [
                {"meter": "calls", "model": "per_unit", "unit_price": "1000000000"},
                {"meter": "seats", "model": "per_unit", "unit_price": "1000000000"},
                {"meter": "peak", "model": "per_unit", "unit_price": "1000000000"},
                {"meter": "low", "model": "per_unit", "unit_price": "1000000000"},
                {"meter": "mean", "model": "per_unit", "unit_price": "1000000000"},
                {"meter": "disk", "model": "per_unit", "unit_price": "1000000000"},
                # Fees that pass 64 bits after a few large transactions.
                {"meter": "payments", "model": "percentage", "rate": "1000000000"},
            ]},
        ],
    },
    "test",
)  # fmt: skip

TERMS = {
    ("t1", "a"): Terms("basic", None, 1),
    ("t1", "b"): Terms("pricey", None, 1, anchor_day=15),
    ("t1", "c"): Terms("basic", datetime(2026, 10, 12, 6, tzinfo=UTC), 1),
    # An immediate change, at an instant within a day: the day's usage splits there.
    ("t2", "a"): Terms(
        "basic", None, 1, ((datetime(2026, 10, 14, 9, 30, tzinfo=UTC), "pricey"),), anchor_day=10
    ),
    ("t2", "d"): Terms("nowhere", None, 1),  # a plan the book does not have
}
OWNERS = [*TERMS, ("t2", "ghost")]  # and one the directory does not know

MOMENTS = st.one_of(
    st.datetimes(datetime(2026, 9, 14), datetime(2026, 10, 20, 12, 6), timezones=st.just(UTC)),
    st.datetimes(datetime(2026, 10, 1), datetime(2026, 10, 21), timezones=st.just(UTC)),
    st.just(NOW + timedelta(minutes=5)),  # the window's edges, which are in it
    st.just(NOW - timedelta(days=35)),
    st.just(NOW + timedelta(minutes=5, microseconds=1)),
    st.datetimes(datetime(2026, 10, 9), datetime(2026, 10, 16),
                 timezones=st.sampled_from([timezone(timedelta(hours=2)),
                                            timezone(timedelta(hours=-7))])),
)  # fmt: skip

EVENTS = st.builds(
    lambda event_id, owner, meter, quantity, moment, source, properties: UsageEvent(
        id=f"e{event_id}",
        tenant=owner[0],
        subscription=owner[1],
        meter=meter,
        quantity=quantity,
        timestamp=moment,
        source=source,
        properties=properties,
    ),
    st.integers(0, 25),  # few ids: duplicates are common
    st.sampled_from(OWNERS),
    st.sampled_from(
        [
            "calls",
            "calls",
            "calls",
            "requests",
            "peak",
            "low",
            "mean",
            "disk",
            "disk",
            "payments",
            "seats",
            "users",
            "users",
            "tokens",
            "tokens",
            "storage",
            "x",
        ]
    ),
    st.one_of(
        st.integers(-2, 50), st.integers(1, 9), st.integers(0, 2**62), st.just(9_223_372_036)
    ),
    MOMENTS,
    st.sampled_from(["default", "svc"]),
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.sampled_from(["small", "large", 7]),
            "user": st.sampled_from(["u1", "u2", "u3", True, 3]),
            "region": st.just("eu"),
        },
    ),
)

# The events of a record: all of one subscription's, as a producer batches them, or of any.
SENT = st.one_of(
    st.tuples(st.sampled_from(OWNERS), st.lists(EVENTS, min_size=1, max_size=5)).map(
        lambda drawn: [
            msgspec.structs.replace(e, tenant=drawn[0][0], subscription=drawn[0][1])
            for e in drawn[1]
        ]
    ),
    st.lists(EVENTS, min_size=1, max_size=5),
)

# A record: its events, and how it is sent (on its first event's partition, on another,
# or as bytes that are no record at all).
RECORDS = st.tuples(
    SENT,
    st.sampled_from(["home", "home", "home", "other", "garbage", "empty", "bad item"]),
)


def payload(events: list[UsageEvent], how: str) -> tuple[int, bytes]:
    home = partition_of(f"{events[0].tenant}/{events[0].subscription}".encode(), PARTITIONS)
    if how == "garbage":
        return 0, b'{"id": "x", not json'
    if how == "empty":
        return home, b"[]"
    if how == "bad item":
        items = [encode(e) for e in events]
        items.insert(len(items) // 2, b'{"id": "y", "tenant": 5}')
        return home, b"[" + b",".join(items) + b"]"
    partition = home if how == "home" else (home + 1) % PARTITIONS
    return partition, encode(events[0]) if len(events) == 1 else encode_batch(events)


def rows(result: BatchResult | reference_step.BatchResult) -> dict[str, list[object]]:
    return {
        "accepted": list(result.accepted),
        "repeated": list(result.repeated),
        "rejected": list(result.rejected),
        "rated": list(result.rated),
        "distinct": list(result.distinct),
        "forwarded": list(result.forwarded),
    }


@pytest.mark.parametrize("home", ["memory", "disk"])
@settings(max_examples=300, deadline=None)
@given(
    drawn=st.lists(RECORDS, min_size=1, max_size=14),
    cuts=st.lists(st.integers(0, 14), max_size=3),
    copied=st.sets(st.integers(0, 14), max_size=4),
    replayed=st.one_of(st.none(), st.integers(0, 3)),
    epoch=st.sampled_from([0, 0, 1]),
)
def test_the_columnar_step_gives_the_rows_and_state_of_the_step_it_replaced(
    marks_folder: Path,
    home: str,
    *,
    drawn: list[tuple[list[UsageEvent], str]],
    cuts: list[int],
    copied: set[int],
    replayed: int | None,
    epoch: int,
) -> None:
    records = [
        Record(*_placed(payload(events, how), ordinal(epoch, offset)))
        for offset, (events, how) in enumerate(drawn)
    ]
    copies = {(r.partition, r.offset) for r in records if r.offset & ((1 << 64) - 1) in copied}
    bounds = sorted({0, len(records), *(min(c, len(records)) for c in cuts)})
    batches = [records[a:b] for a, b in pairwise(bounds) if a < b]
    if replayed is not None:  # a crash: the batches from an earlier one are read again
        batches += batches[min(replayed, len(batches) - 1) :]
    charges = ChargeTable.compile(BOOK)
    # The columnar step with its marks in memory or on disk; the reference's in memory.
    folder = marks_folder / uuid.uuid4().hex
    marks = Marks(disk_generations(folder)) if home == "disk" else Marks()
    step = BatchProcessor(UsageState(marks), fixed(TERMS), BOOK, charges, window=WINDOW,
                          partitions=PARTITIONS)  # fmt: skip
    reference = reference_step.BatchProcessor(UsageState(), TERMS.get, BOOK, charges,
                                              window=WINDOW, partitions=PARTITIONS)  # fmt: skip
    for batch in batches:
        assert rows(step.process(batch, copies)) == rows(reference.process(batch, copies))
    ours, theirs = step.state, reference.state
    assert ours.totals == theirs.totals
    assert {mark: ours.marks.get(mark) for mark in ours.marks} == dict(theirs.marks.newest)
    assert ours.refused == theirs.refused
    assert ours.distinct == theirs.distinct


def _placed(sent: tuple[int, bytes], offset: int) -> tuple[int, int, bytes]:
    return sent[0], offset, sent[1]
