"""One batch through validation, dedupe, aggregation and rating, without any service."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone

import msgspec

from aggregation import refusals
from aggregation.batch import BatchProcessor
from aggregation.model import RatedTotal, Record
from aggregation.state import UsageState
from base.events import (
    MAX_RECORD_EVENTS,
    EventWindow,
    UsageEvent,
    encode,
    encode_batch,
    group_label,
    partition_of,
)
from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book, parse_price_book
from rating.period import midnight
from rating.plans import PriceBook
from rating.table import ChargeTable
from subscriptions.directory import fixed
from subscriptions.model import Owner, Terms

BOOK = load_price_book(PRICE_BOOK)


NOW = datetime(2026, 10, 20, tzinfo=UTC)
WINDOW = EventWindow(timedelta(days=35), timedelta(minutes=5), clock=lambda: NOW)


PARTITIONS = 4
HOUR = timedelta(hours=1)


def on_plans(plans: dict[Owner, str]) -> Callable[[Sequence[Owner]], list[Terms | None]]:
    """Subscriptions as the worker's directory gives them: each on one plan, no end."""
    return fixed({owner: Terms(plan, None, 1) for owner, plan in plans.items()})


def processor() -> BatchProcessor:
    return BatchProcessor(
        UsageState(),
        on_plans({("demo", "s1"): "starter", ("demo", "s2"): "growth"}),
        BOOK,
        ChargeTable.compile(BOOK),
        window=WINDOW,
        partitions=PARTITIONS,
    )


def processor_for(book: PriceBook, plan: str, state: UsageState | None = None) -> BatchProcessor:
    """A batch step over ``book`` where demo/s1 is on ``plan``."""
    return BatchProcessor(
        state or UsageState(), on_plans({("demo", "s1"): plan}), book, ChargeTable.compile(book),
        window=WINDOW, partitions=PARTITIONS,
    )  # fmt: skip


def home(subscription: str) -> int:
    return partition_of(f"demo/{subscription}".encode(), PARTITIONS)


def usage(
    event_id: str,
    subscription: str = "s1",
    meter: str = "api_calls",
    quantity: int = 10,
    timestamp: datetime = datetime(2026, 10, 2, tzinfo=UTC),
) -> UsageEvent:
    return UsageEvent(id=event_id, tenant="demo", subscription=subscription, meter=meter,
                      quantity=quantity, timestamp=timestamp)  # fmt: skip


def record(offset: int, *events: UsageEvent, raw: bytes | None = None) -> Record:
    """A record as the producer sends it: on the first event's partition."""
    if raw is not None:
        return (0, offset, raw)
    value = encode(events[0]) if len(events) == 1 else encode_batch(events)
    return (home(events[0].subscription), offset, value)


def test_a_batch_with_a_duplicate_rates_each_distinct_event_once() -> None:
    result = processor().process(
        [record(0, usage("a")), record(1, usage("b")), record(2, usage("a"))]
    )
    assert result.duplicates == 1
    assert [a.event.id for a in result.accepted] == ["a", "b"]
    (rated,) = result.rated
    assert (rated.quantity, rated.amount_nanos, rated.offset) == (20, 8_000_000, 1)
    assert (rated.plan, rated.currency) == ("starter", "USD")


def test_every_bad_event_is_rejected_with_a_reason_and_the_good_ones_still_count() -> None:
    result = processor().process(
        [
            record(0, raw=b"{not json"),
            record(1, raw=b'{"id": "x"}'),
            record(2, usage("c", subscription="nobody")),
            record(3, usage("d", meter="gpu_hours")),
            record(4, usage("e", quantity=-3)),
            record(5, usage("f")),
            ((home("s1") + 1) % PARTITIONS, 6, encode(usage("g"))),
            record(7, usage("h", timestamp=NOW - timedelta(days=35, seconds=1))),
            record(8, usage("i", timestamp=NOW + timedelta(minutes=5, seconds=1))),
            record(9, raw=encode(usage("j")).replace(b"Z", b"")),
        ]
    )
    assert [(r.offset, r.reason) for r in result.rejected] == [
        (0, "malformed"),
        (1, "malformed"),
        (2, "unknown_subscription"),
        (3, "unpriced_meter"),
        (4, "negative_quantity"),
        (7, "too_old"),
        (8, "in_future"),
        (9, "malformed"),
    ]
    assert "missing required field" in result.rejected[1].detail
    assert "timezone" in result.rejected[-1].detail
    assert [a.event.id for a in result.accepted] == ["f"]
    assert [(f.offset, f.event.id, f.home) for f in result.forwarded] == [(6, "g", home("s1"))]


def test_an_event_on_another_partition_is_forwarded_whatever_else_is_wrong_with_it() -> None:
    """Judged where it belongs: the worker of its partition holds what decides it. Nothing
    of it counts here, not even its dedupe mark. A forwarded copy that lands elsewhere
    again is refused instead: forwarding it on could go round for ever."""
    elsewhere = (home("s1") + 1) % PARTITIONS
    step = processor()
    value = encode_batch([usage("a"), usage("b", quantity=-1), usage("a")])
    result = step.process([(elsewhere, 0, value)])
    assert [(f.index, f.event.id) for f in result.forwarded] == [(0, "a"), (1, "b"), (2, "a")]
    assert not result.accepted and not result.rejected and not result.repeated
    at_home = step.process([(home("s1"), 1, encode(usage("a")))])
    assert [a.event.id for a in at_home.accepted] == ["a"]
    again = step.process([(elsewhere, 2, encode(usage("c")))], copies={(elsewhere, 2)})
    assert [r.reason for r in again.rejected] == ["wrong_partition"] and not again.forwarded


def test_a_record_batching_events_counts_each_and_rejects_only_its_bad_ones() -> None:
    good = [usage("a", quantity=1), usage("b", quantity=2), usage("a", quantity=1)]
    value = encode_batch(good)[:-1] + b',{"id": 5},' + encode(usage("c", quantity=4)) + b"]"
    result = processor().process([(home("s1"), 0, value)])
    assert [(a.event.id, a.index) for a in result.accepted] == [("a", 0), ("b", 1), ("c", 4)]
    assert [(r.index, r.reason) for r in result.rejected] == [(3, "malformed")]
    assert result.duplicates == 1
    (rated,) = result.rated
    assert (rated.quantity, rated.offset, rated.index) == (7, 0, 4)


def test_a_batch_that_only_replays_counted_events_rates_nothing_new() -> None:
    step = processor()
    step.process([record(0, usage("a"))])
    again = step.process([record(0, usage("a"))])
    assert not again.rated and again.duplicates == 0 and len(again.accepted) == 1


def test_a_grouped_meter_rates_each_group_on_its_own() -> None:
    def tokens(event_id: str, quantity: int, **properties: str) -> UsageEvent:
        return msgspec.structs.replace(
            usage(event_id, meter="tokens", quantity=quantity), properties=properties
        )

    result = processor().process(
        [record(0, tokens("a", 100, model="small"), tokens("b", 200, model="large"),
                tokens("c", 50), tokens("d", 1, model="small", region="eu"))]
    )  # fmt: skip
    assert {(r.group, r.quantity) for r in result.rated} == {
        ('{"model":"small"}', 101),
        ('{"model":"large"}', 200),
        ('{"model":null}', 50),
    }
    assert group_label('{"model":null}') == "model=(none)"


def test_an_event_that_would_take_a_total_past_what_can_be_billed_is_refused_alone() -> None:
    book = parse_price_book(
        {"meters": [{"id": "calls"}],
         "plans": [{"id": "pricey", "currency": "USD", "charges": [
             {"meter": "calls", "model": "per_unit", "unit_price": "1000000000"}]}]},
        "test",
    )  # fmt: skip
    step = processor_for(book, "pricey")
    calls = [usage(name, meter="calls", quantity=q) for name, q in (("a", 5), ("b", 5), ("c", 4))]
    result = step.process([record(0, *calls)])
    assert [(r.index, r.reason) for r in result.rejected] == [(1, "amount_overflow")]
    assert "would pass 9 units" in result.rejected[0].detail
    # The reason names the cap of one rated total, in its currency.
    assert "at most 9223372036.854775807 USD for one rated total" in result.rejected[0].detail
    (rated,) = result.rated
    assert (rated.quantity, rated.amount_nanos) == (9, 9 * 10**18)
    restarted = UsageState()  # what a new worker reloads from the store
    restarted.restore(
        [(a.dedupe_key, (a.partition, a.offset, a.index)) for a in result.accepted],
        step.state.totals.items(),
        [((r.partition, r.offset, r.index), r.reason) for r in result.rejected],
    )
    # A replay after a crash, on a worker that reloaded the store, decides the same.
    again = processor_for(book, "pricey", restarted).process([record(0, *calls)])
    assert [(r.index, r.reason) for r in again.rejected] == [(1, "amount_overflow")]
    assert [a.event.id for a in again.accepted] == ["a", "c"] and not again.rated


def test_meters_count_keep_the_largest_or_keep_the_latest_as_declared() -> None:
    book = parse_price_book(
        {"meters": [{"id": "requests", "aggregation": "count"},
                    {"id": "peak_gb", "aggregation": "max"},
                    {"id": "seats", "aggregation": "latest"}],
         "plans": [{"id": "team", "currency": "USD", "charges": [
             {"meter": m, "model": "per_unit", "unit_price": "1"}
             for m in ("requests", "peak_gb", "seats")]}]},
        "test",
    )  # fmt: skip
    step = processor_for(book, "team")
    day = datetime(2026, 10, 2, tzinfo=UTC)
    sent = [
        usage("r1", meter="requests", quantity=500), usage("r2", meter="requests", quantity=7),
        usage("p1", meter="peak_gb", quantity=30), usage("p2", meter="peak_gb", quantity=12),
        usage("s1", meter="seats", quantity=10, timestamp=day + timedelta(hours=2)),
        usage("s2", meter="seats", quantity=4, timestamp=day + timedelta(hours=1)),  # late
    ]  # fmt: skip
    result = step.process([record(0, *sent)])
    assert {r.meter: (r.quantity, r.amount_nanos) for r in result.rated} == {
        "requests": (2, 2 * 10**9), "peak_gb": (30, 30 * 10**9), "seats": (10, 10 * 10**9),
    }  # fmt: skip
    (seats,) = [r for r in result.rated if r.meter == "seats"]
    assert seats.value_at == int((day + timedelta(hours=2)).timestamp() * 1000)


def test_an_events_period_is_its_utc_month_whatever_offset_it_states() -> None:
    eastern = timezone(timedelta(hours=-5))
    late_september_there = datetime(2026, 9, 30, 21, 0, tzinfo=eastern)  # 02:00 UTC, Oct 1
    result = processor().process([record(0, usage("a", timestamp=late_september_there))])
    (rated,) = result.rated
    assert rated.period_start == date(2026, 10, 1)


def test_usage_stamped_from_a_subscriptions_end_on_is_refused_and_before_it_billed() -> None:
    end = datetime(2026, 10, 10, tzinfo=UTC)
    step = BatchProcessor(
        UsageState(), fixed({("demo", "s1"): Terms("starter", end, 1)}), BOOK,
        ChargeTable.compile(BOOK), window=WINDOW, partitions=PARTITIONS,
    )  # fmt: skip
    result = step.process(
        [record(0, usage("a", timestamp=end - timedelta(milliseconds=1))),
         record(1, usage("b", timestamp=end)), record(2, usage("c", timestamp=end + HOUR))]
    )  # fmt: skip
    assert [a.event.id for a in result.accepted] == ["a"]
    assert [r.reason for r in result.rejected] == ["subscription_ended"] * 2
    assert "ended at 2026-10-10T00:00:00+00:00" in result.rejected[0].detail


def either_side_of_the_15th(entry: Terms) -> list[RatedTotal]:
    """The totals of one event just before midnight UTC of Oct 15 and one at it."""
    step = BatchProcessor(
        UsageState(), fixed({("demo", "s1"): entry}), BOOK, ChargeTable.compile(BOOK),
        window=WINDOW, partitions=PARTITIONS,
    )  # fmt: skip
    return step.process(
        [record(0, usage("a", timestamp=datetime(2026, 10, 14, 23, 59, tzinfo=UTC))),
         record(1, usage("b", timestamp=datetime(2026, 10, 15, tzinfo=UTC)))]
    ).rated  # fmt: skip


def test_usage_is_rated_under_the_plan_in_force_on_its_day() -> None:
    upgraded = Terms("starter", None, 1, changes=((midnight(date(2026, 10, 15)), "growth"),))
    rated = either_side_of_the_15th(upgraded)
    assert sorted((r.plan, r.quantity) for r in rated) == [("growth", 10), ("starter", 10)]


def test_usage_of_a_subscription_anchored_on_the_15th_is_totalled_by_its_own_periods() -> None:
    rated = either_side_of_the_15th(Terms("starter", None, 1, anchor_day=15))
    assert sorted((r.period_start, r.quantity) for r in rated) == [
        (date(2026, 9, 1), 10), (date(2026, 10, 1), 10)
    ]  # fmt: skip


def test_each_refusal_rule_is_the_reason_of_the_event_that_breaks_it_and_no_other() -> None:
    """One event per rule of ``refusals``, each breaking that rule and none checked before
    it: the batch names exactly the rules of the table, in its order."""
    book = parse_price_book(
        {"meters": [{"id": "calls"}, {"id": "users", "aggregation": "unique_count",
                                      "unique": "user"},
                    {"id": "disk", "aggregation": "weighted_sum"}],
         "plans": [{"id": "p", "currency": "USD", "charges": [
                        {"meter": "calls", "model": "per_unit", "unit_price": "1000000000"},
                        {"meter": "users", "model": "per_unit", "unit_price": "1"},
                        {"meter": "disk", "model": "per_unit", "unit_price": "1"}]},
                   {"id": "later", "currency": "USD", "effective_from": "2027-01-01",
                    "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "1"}]}]},
        "test",
    )  # fmt: skip
    ended = datetime(2026, 10, 1, tzinfo=UTC)
    terms = {("demo", "s1"): Terms("p", None, 1), ("demo", "ended"): Terms("p", ended, 1),
             ("demo", "late"): Terms("later", None, 1)}  # fmt: skip
    step = BatchProcessor(UsageState(), fixed(terms), book, ChargeTable.compile(book),
                          window=WINDOW, partitions=PARTITIONS)  # fmt: skip
    day = datetime(2026, 10, 2, tzinfo=UTC)
    # A gauge reported an hour after ``day`` already: a report of ``day`` is out of order.
    gauge = usage("earlier", meter="disk", quantity=1, timestamp=day + HOUR)
    assert step.process([Record(home("s1"), 0, encode(gauge))]).accepted
    breaking = {
        refusals.EMPTY_RECORD: (home("s1"), b"[]"),
        refusals.MALFORMED: (home("s1"), b'{"id": 1}'),
        refusals.WRONG_PARTITION: ((home("s1") + 1) % PARTITIONS, encode(usage("a", "s1"))),
        refusals.UNKNOWN_SUBSCRIPTION: (home("nobody"), encode(usage("b", "nobody"))),
        refusals.SUBSCRIPTION_ENDED: (home("ended"), encode(usage("c", "ended", "calls"))),
        refusals.PLAN_NOT_IN_FORCE: (home("late"), encode(usage("d", "late", "calls"))),
        refusals.UNPRICED_METER: (home("s1"), encode(usage("e", meter="api_calls"))),
        refusals.NEGATIVE_QUANTITY: (home("s1"), encode(usage("f", meter="calls", quantity=-1))),
        refusals.TOO_OLD: (home("s1"), encode(usage("g", meter="calls",
                                                     timestamp=NOW - timedelta(days=36)))),
        refusals.IN_FUTURE: (home("s1"), encode(usage("h", meter="calls",
                                                       timestamp=NOW + HOUR))),
        refusals.MISSING_PROPERTY: (home("s1"), encode(usage("i", meter="users"))),
        refusals.AMOUNT_OVERFLOW: (home("s1"), encode(usage("j", meter="calls", quantity=10,
                                                             timestamp=day))),
        refusals.OUT_OF_ORDER: (home("s1"), encode(usage("k", meter="disk", quantity=1,
                                                          timestamp=day))),
    }  # fmt: skip
    records = [Record(partition, offset, value)
               for offset, (partition, value) in enumerate(breaking.values())]  # fmt: skip
    # The wrong-partition event is a copy a worker forwarded already (its third record).
    result = step.process(records, copies={(records[2].partition, records[2].offset)})
    assert [r.reason for r in result.rejected] == [rule.reason for rule in breaking]
    assert all(r.detail for r in result.rejected)
    rules = [rule for rule in refusals.RULES if rule is not refusals.RECORD_TOO_LARGE]
    assert list(breaking) == rules, "every rule but a record's size (tested by itself), in order"
    assert not result.accepted
    # An event that breaks two rules is refused by the one checked first, the earlier in
    # the table.
    old = NOW - timedelta(days=36)
    both = [
        (home("nobody"), usage("l", "nobody", quantity=-1)),  # subscription, quantity
        (home("ended"), usage("m", "ended", "api_calls")),  # ended, meter
        (home("s1"), usage("n", meter="api_calls", quantity=-1)),  # meter, quantity
        (home("s1"), usage("o", meter="calls", quantity=-1, timestamp=old)),  # quantity, age
        (home("s1"), usage("p", meter="users", timestamp=old)),  # age, property
    ]
    first = step.process([Record(partition, 100 + n, encode(event))
                          for n, (partition, event) in enumerate(both)])  # fmt: skip
    assert [r.reason for r in first.rejected] == [
        "unknown_subscription", "subscription_ended", "unpriced_meter", "negative_quantity",
        "too_old",
    ]  # fmt: skip


def test_a_record_holding_more_events_than_a_record_may_refuses_the_rest() -> None:
    value = encode_batch([usage(f"e{n}", quantity=1) for n in range(MAX_RECORD_EVENTS + 2)])
    result = processor().process([Record(home("s1"), 0, value)])
    assert [(r.index, r.reason) for r in result.rejected] == [
        (MAX_RECORD_EVENTS, "record_too_large"), (MAX_RECORD_EVENTS + 1, "record_too_large")
    ]  # fmt: skip
    assert len(result.accepted) == MAX_RECORD_EVENTS
