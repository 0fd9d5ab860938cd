"""Ending and renewing subscriptions: what is allowed, and what is refused with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from invoicing.lifecycle import LifecycleError, cancel, period_end, renew
from invoicing.store import SubscriptionRow

START = datetime(2026, 8, 10, tzinfo=UTC)
ROW = SubscriptionRow("acme", "s1", "c1", "growth", START)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def test_a_subscription_ends_when_asked_and_can_be_renewed() -> None:
    ended = cancel(ROW, at(10, 15), last_finalized=date(2026, 9, 1))
    assert ended.ended_at == at(10, 15)
    assert cancel(ended, at(10, 12), last_finalized=None).ended_at == at(10, 12)  # earlier
    assert renew(ended, last_finalized=date(2026, 9, 1)).ended_at is None


def test_the_end_of_the_period_is_midnight_utc_after_its_last_day() -> None:
    assert period_end(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda: cancel(ROW, START, None), "is not after its start"),
        (lambda: cancel(ROW, at(9, 20), date(2026, 9, 1)), "falls in 2026-09"),
        (lambda: cancel(cancel(ROW, at(10, 1), None), at(11, 1), None), "already ends"),
        (lambda: renew(ROW, None), "has no end to remove"),
        (lambda: renew(cancel(ROW, at(9, 5), None), date(2026, 9, 1)), "finalized up to 2026-09"),
    ],
)  # fmt: skip
def test_a_change_that_cannot_be_made_is_refused_with_its_reason(
    change: object, problem: str
) -> None:
    assert callable(change)
    with pytest.raises(LifecycleError, match=problem):
        change()
