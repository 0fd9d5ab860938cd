"""The store against the real ClickHouse engine (chDB through clickhouse-connect)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from aggregation.model import (
    AcceptedEvent,
    BatchResult,
    EventRows,
    RatedRows,
    RatedTotal,
    Rejection,
    TotalKey,
)
from aggregation.state import Total, dedupe_key, value_digest
from base import migrations
from base.events import UsageEvent
from meterline.cli import main
from rating.money import INT64_MAX, from_nanos
from tests.stores import Stores

pytestmark = pytest.mark.integration

PERIOD = date(2026, 10, 1)
HOUR = timedelta(hours=1)


def rated(
    quantity: int, nanos: int, offset: int, subscription: str = "s1", index: int = 0
) -> RatedTotal:
    return RatedTotal(
        "t",
        subscription,
        "calls",
        "",
        PERIOD,
        "pro",
        1,
        "USD",
        quantity,
        nanos,
        3,
        offset,
        index,
        1_790_000_000_000,
    )


def test_migrating_twice_applies_nothing_the_second_time(store: Stores) -> None:
    assert store.connection.migrate() == []
    assert migrations.pending(store.connection.client, store.database) == []
    assert {m.version for m in migrations.available()} <= migrations.applied_versions(
        store.connection.client, store.database
    )


def test_amounts_round_trip_exactly_to_the_nano_at_the_extremes(store: Stores) -> None:
    nanos = [0, 1, -1, 999_999_999, INT64_MAX, -INT64_MAX]
    store.sink.write_batch(
        BatchResult(
            rated=RatedRows.of([rated(1, n, i, subscription=f"s{i}") for i, n in enumerate(nanos)])
        )
    )
    amounts = {row.subscription: row.amount for row in store.reads.rated_totals(PERIOD)}
    assert amounts == {f"s{i}": from_nanos(n) for i, n in enumerate(nanos)}
    assert all(isinstance(a, Decimal) for a in amounts.values())


def test_a_newer_version_of_a_total_replaces_the_older_and_a_replay_changes_nothing(
    store: Stores,
) -> None:
    store.sink.write_batch(BatchResult(rated=RatedRows.of([rated(5, 50, offset=10)])))
    store.sink.write_batch(BatchResult(rated=RatedRows.of([rated(7, 70, offset=12)])))
    store.sink.write_batch(
        BatchResult(rated=RatedRows.of([rated(5, 50, offset=10)]))
    )  # a late replay
    (row,) = store.reads.rated_totals(PERIOD)
    assert (row.quantity, row.amount) == (7, from_nanos(70))
    rows, size = store.connection.table_sizes()["rated_usage"]
    assert 1 <= rows <= 3 and size > 0, "three versions written, merged or not yet"


def test_the_state_a_worker_reloads_is_the_state_it_wrote(store: Stores) -> None:
    event = UsageEvent(id="e1", tenant="t", subscription="s1", meter="calls", quantity=5,
                       timestamp=datetime(2026, 10, 3, 4, 5, 6, 789000, tzinfo=UTC))  # fmt: skip
    key = dedupe_key(event)
    store.sink.write_batch(
        BatchResult(
            accepted=EventRows.of([AcceptedEvent(3, 41, 2, event, key)]),
            rated=RatedRows.of([rated(5, 50, offset=41, index=2)]),
            rejected=[
                Rejection(3, 42, 0, "malformed", "bad json", b"{"),
                Rejection(3, 42, 1, "malformed", "bad json too", b"["),
                Rejection(3, 43, 0, "amount_overflow", "too much", b"{}"),
            ],
        )
    )
    an_hour_ago, in_an_hour = datetime.now(UTC) - HOUR, datetime.now(UTC) + HOUR
    assert list(store.sink.load_marks({3}, since=an_hour_ago)) == [(key, (3, 41, 2))]
    assert list(store.sink.load_marks({0, 1}, since=an_hour_ago)) == []
    assert list(store.sink.load_marks({3}, since=in_an_hour)) == []  # outside the dedupe window
    assert list(store.sink.load_totals({3}, since_period=PERIOD)) == [
        (TotalKey("t", "s1", "calls", PERIOD, "pro", 1, ""), Total(5, 3, 41, 2, 1_790_000_000_000))
    ]
    assert (
        list(store.sink.load_totals({3}, since_period=date(2026, 11, 1))) == []
    )  # a closed period
    assert store.connection.count("rejected_events") == 3
    assert list(store.sink.load_refusals({3}, since=an_hour_ago)) == [
        ((3, 43, 0), "amount_overflow")
    ]
    assert list(store.sink.load_refusals({3}, since=in_an_hour)) == []
    stored_at = store.connection.client.query(
        f"SELECT timestamp FROM {store.connection.table('events')}"
    ).result_rows
    assert stored_at[0][0].replace(tzinfo=UTC) == event.timestamp


def test_a_total_rated_from_more_than_its_quantity_is_reloaded_whole(store: Stores) -> None:
    """An average bills its mean but resumes from its sum and count; a percentage charge
    resumes from the fees it accrued; a weighted sum from its integral and last value;
    each row says what it was billed from."""
    key = TotalKey("t", "s1", "calls", PERIOD, "pro", 1, "")
    written = RatedRows([key], ["USD"], [4], [40], [3], [41], [2], [7],
                        aggregates=[13], events=[3], fees_nanos=[INT64_MAX],
                        lasts=[-5])  # fmt: skip
    store.sink.write_batch(BatchResult(rated=written))
    assert list(store.sink.load_totals({3}, since_period=PERIOD)) == [
        (key, Total(13, 3, 41, 2, 7, events=3, fees=INT64_MAX, last=-5))
    ]
    (row,) = store.reads.rated_totals(PERIOD)
    assert (row.quantity, row.events, row.fees_nanos, row.aggregate, row.last_value) == (
        4, 3, INT64_MAX, 13, -5
    )  # fmt: skip


def test_the_distinct_values_a_unique_count_saw_are_reloaded_once_each(store: Stores) -> None:
    key = TotalKey("t", "s1", "active_users", PERIOD, "pro", 1, "")
    values = [value_digest("ann"), value_digest("bob"), value_digest(b"\x00\xff")]
    batch = BatchResult(distinct=[(key, 3, value) for value in values])
    store.sink.write_batch(batch)
    store.sink.write_batch(batch)  # a replay writes the same rows again
    assert sorted(store.sink.load_distinct({3}, since_period=PERIOD)) == sorted(
        (key, 3, value) for value in values
    )
    assert list(store.sink.load_distinct({0}, since_period=PERIOD)) == []
    assert list(store.sink.load_distinct({3}, since_period=date(2026, 11, 1))) == []


def test_hourly_windows_count_each_distinct_event_once_even_after_a_replay(store: Stores) -> None:
    def accepted(event_id: str, minute: int, quantity: int, offset: int) -> AcceptedEvent:
        event = UsageEvent(id=event_id, tenant="t", subscription="s1", meter="calls",
                           quantity=quantity, source="svc",
                           timestamp=datetime(2026, 10, 3, 4, 0, tzinfo=UTC)
                           + timedelta(minutes=minute))  # fmt: skip
        return AcceptedEvent(0, offset, 0, event, dedupe_key(event))

    batch = BatchResult(accepted=EventRows.of([accepted("a", 5, 2, 0), accepted("b", 50, 3, 1),
                                               accepted("c", 70, 4, 2)]))  # fmt: skip
    store.sink.write_batch(batch)
    store.sink.write_batch(batch)  # a replay after a crash writes the same rows again
    # usage_hourly is a view over the deduplicated raw events (migration 0004).
    windows = store.connection.client.query(
        "SELECT toHour(window_start), events, quantity "
        f"FROM {store.connection.table('usage_hourly')} "
        "WHERE tenant = 't' AND subscription = 's1' ORDER BY window_start"
    ).result_rows
    assert [tuple(w) for w in windows] == [(4, 2, 5), (5, 1, 4)]


def test_the_usage_command_shows_a_subscriptions_period_so_far(store_environment: Stores) -> None:
    store = store_environment
    tokens = RatedTotal("t", "s1", "tokens", '{"model":"large"}', PERIOD, "growth", 2, "USD",
                        1500, 150_000_000, 3, 7, 0, 0)  # fmt: skip
    store.sink.write_batch(BatchResult(rated=RatedRows.of([tokens])))
    result = CliRunner().invoke(main, ["usage", "s1", "--tenant", "t", "--period", "2026-10",
                                       "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["totals"] == {"USD": "0.150000000"}
    [line] = answer["lines"]
    assert (line["meter"], line["group"], line["quantity"]) == (
        "tokens",
        {"model": "large"},
        "1500",
    )
    other = CliRunner().invoke(main, ["usage", "s1", "--tenant", "someone-else", "--period",
                                      "2026-10"])  # fmt: skip
    assert other.exit_code == 0 and "no usage rated" in other.output
