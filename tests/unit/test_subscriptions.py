"""The worker's view of subscriptions: re-read when an unknown one shows up, not too often,
and refreshed now and then so that a cancellation takes effect."""

from __future__ import annotations

from datetime import UTC, datetime

from subscriptions.directory import SubscriptionDirectory
from subscriptions.model import Owner, Terms

END = datetime(2026, 10, 20, tzinfo=UTC)


class FakeStore:
    """Subscription rows with versions, as ``SubscriptionStore.terms_written_since`` reads them."""

    def __init__(self) -> None:
        self.rows: list[tuple[Owner, Terms]] = [(("t", "s1"), Terms("starter", None, 1))]
        self.asked: list[int] = []

    def entries_since(self, version: int) -> list[tuple[Owner, Terms]]:
        self.asked.append(version)
        return [row for row in self.rows if row[1].version > version]


def test_an_unknown_subscription_is_looked_up_again_but_at_most_once_per_interval() -> None:
    store, now = FakeStore(), [100.0]
    directory = SubscriptionDirectory(
        store.entries_since, min_interval=5.0, refresh_interval=60.0, clock=lambda: now[0]
    )
    store.rows.append((("t", "s2"), Terms("growth", None, 2)))  # created after the start
    assert directory.entry(("t", "s2")) is None  # too soon after the first load
    now[0] = 105.0
    assert directory.entry(("t", "s2")) == Terms("growth", None, 2)
    assert directory.entry(("t", "nobody")) is None  # just loaded: no new query
    assert directory.entry(("t", "s1")) == Terms("starter", None, 1)
    assert store.asked == [-1, 1], "the second load asks only for what is newer"


def test_a_cancellation_reaches_the_worker_at_the_next_refresh() -> None:
    store, now = FakeStore(), [0.0]
    directory = SubscriptionDirectory(
        store.entries_since, min_interval=5.0, refresh_interval=30.0, clock=lambda: now[0]
    )
    store.rows.append((("t", "s1"), Terms("starter", END, 7)))
    assert directory.entry(("t", "s1")) == Terms("starter", None, 1)
    now[0] = 30.0
    assert directory.entry(("t", "s1")) == Terms("starter", END, 7)


def test_an_older_version_read_late_does_not_undo_a_newer_one() -> None:
    store = FakeStore()
    store.rows = [(("t", "s1"), Terms("starter", END, 7)), (("t", "s1"), Terms("starter", None, 1))]
    directory = SubscriptionDirectory(store.entries_since)
    assert directory.entry(("t", "s1")) == Terms("starter", END, 7)


def test_the_latest_anchor_day_known_bounds_how_far_back_open_periods_start() -> None:
    store = FakeStore()
    directory = SubscriptionDirectory(store.entries_since)
    assert directory.latest_anchor == 1  # calendar months only: no earlier period to keep
    directory.absorb(("t", "s2"), Terms("growth", None, 2, anchor_day=15))
    directory.absorb(("t", "s3"), Terms("growth", None, 3, anchor_day=9))
    assert directory.latest_anchor == 15
