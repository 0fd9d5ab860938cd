"""One batch through validation, dedupe, aggregation and rating, without any service."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregation.batch import BatchProcessor
from aggregation.state import UsageState
from meterline.demo import PRICE_BOOK
from meterline.events import UsageEvent, encode
from rating.plans import load_price_book
from rating.table import ChargeTable

BOOK = load_price_book(PRICE_BOOK)


def processor() -> BatchProcessor:
    plans = {("demo", "s1"): "starter", ("demo", "s2"): "growth"}
    return BatchProcessor(UsageState(), plans, BOOK, ChargeTable.compile(BOOK))


def payload(
    event_id: str, subscription: str = "s1", meter: str = "api_calls", quantity: int = 10
) -> bytes:
    return encode(
        UsageEvent(id=event_id, tenant="demo", subscription=subscription, meter=meter,
                   quantity=quantity, timestamp=datetime(2026, 10, 2, tzinfo=UTC))
    )  # fmt: skip


def test_a_batch_with_a_duplicate_rates_each_distinct_event_once() -> None:
    result = processor().process([(0, 0, payload("a")), (0, 1, payload("b")), (0, 2, payload("a"))])
    assert result.duplicates == 1
    assert [a.event.id for a in result.accepted] == ["a", "b"]
    (rated,) = result.rated
    assert (rated.quantity, rated.amount_nanos, rated.offset) == (20, 8_000_000, 1)
    assert (rated.plan, rated.currency) == ("starter", "USD")


def test_every_bad_event_is_rejected_with_a_reason_and_the_good_ones_still_count() -> None:
    result = processor().process(
        [
            (0, 0, b"{not json"),
            (0, 1, b'{"id": "x"}'),
            (0, 2, payload("c", subscription="nobody")),
            (0, 3, payload("d", meter="gpu_hours")),
            (0, 4, payload("e", quantity=-3)),
            (0, 5, payload("f")),
        ]
    )
    assert [(r.offset, r.reason) for r in result.rejected] == [
        (0, "malformed"),
        (1, "malformed"),
        (2, "unknown_subscription"),
        (3, "unpriced_meter"),
        (4, "negative_quantity"),
    ]
    assert "missing required field" in result.rejected[1].detail
    assert [a.event.id for a in result.accepted] == ["f"]


def test_a_batch_that_only_replays_counted_events_rates_nothing_new() -> None:
    step = processor()
    step.process([(0, 0, payload("a"))])
    again = step.process([(0, 0, payload("a"))])
    assert again.rated == [] and again.duplicates == 0 and len(again.accepted) == 1
