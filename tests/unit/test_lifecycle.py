"""Ending and renewing subscriptions: what is allowed, and what is refused with a reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book
from rating.period import midnight
from rating.plans import Entitlement
from subscriptions import registry
from subscriptions.lifecycle import (
    LifecycleError,
    add_coupon,
    cancel,
    change_plan,
    earliest_change_day,
    grant_feature,
    period_end,
    remove_coupon,
    renew,
    revise,
    revoke_feature,
)
from subscriptions.model import AppliedCoupon, Customer, Subscription

BOOK = load_price_book(PRICE_BOOK)
START = datetime(2026, 8, 10, tzinfo=UTC)
ROW = Subscription("acme", "s1", "c1", "growth", START)

SEP_1 = midnight(date(2026, 9, 1))  # the earliest a change may take effect here


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


ENDED_OCT_1 = cancel(ROW, at(10, 1), last_finalized=None)
ENDED_SEP_5 = cancel(ROW, at(9, 5), last_finalized=None)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("refused", "allowed", "problem"),
    [
        # Each refused change beside the nearest one that is allowed, so that the check is
        # shown to refuse exactly what it names, neither more nor less.
        (lambda: cancel(ROW, START, None), lambda: cancel(ROW, START + MS, None),
         "is not after its start"),
        (lambda: cancel(ROW, at(9, 20), date(2026, 9, 1)),
         lambda: cancel(ROW, at(10, 1), date(2026, 9, 1)), "falls in 2026-09"),
        (lambda: cancel(ENDED_OCT_1, at(11, 1), None),
         lambda: cancel(ENDED_OCT_1, at(9, 25), None), "already ends"),
        (lambda: renew(ROW, None), lambda: renew(ENDED_OCT_1, None), "has no end to remove"),
        (lambda: renew(ENDED_SEP_5, date(2026, 9, 1)), lambda: renew(ENDED_SEP_5, date(2026, 8, 1)),
         "finalized up to 2026-09"),
    ],
)  # fmt: skip
def test_a_change_that_cannot_be_made_is_refused_with_its_reason(
    refused: Callable[[], Subscription], allowed: Callable[[], Subscription], problem: str
) -> None:
    with pytest.raises(LifecycleError, match=problem):
        refused()
    changed = allowed()
    assert changed.owner == ROW.owner  # made, not refused


def test_the_earliest_plan_change_is_a_midnight_every_worker_knows_of_in_time() -> None:
    notice = timedelta(minutes=6)
    assert earliest_change_day(datetime(2026, 11, 23, 10, tzinfo=UTC), notice) == date(2026, 11, 24)
    late = datetime(2026, 11, 23, 23, 58, tzinfo=UTC)
    assert earliest_change_day(late, notice) == date(2026, 11, 25)


def move(row: Subscription, plan: str, day: date) -> Subscription:
    return change_plan(row, plan, midnight(day), earliest=SEP_1, last_finalized=None, book=BOOK)


def test_plan_changes_are_kept_in_day_order_and_each_checked() -> None:
    upgraded = move(ROW, "starter", date(2026, 9, 15))
    assert upgraded.changes == ((midnight(date(2026, 9, 15)), "starter"),)
    assert move(upgraded, "growth", date(2026, 10, 1)).changes[-1] == (
        midnight(date(2026, 10, 1)),
        "growth",
    )
    refusals = [
        (lambda: move(ROW, "platinum", date(2026, 9, 15)), "not in the price book"),
        (lambda: move(ROW, "starter", date(2026, 8, 31)), "the earliest is 2026-09-01"),
        (lambda: move(upgraded, "growth", date(2026, 9, 10)), "already changes to starter"),
        (lambda: move(upgraded, "starter", date(2026, 9, 20)), "is on starter then already"),
        (lambda: move(cancel(ROW, at(9, 20), None), "starter", date(2026, 9, 25)), "renew it"),
        (lambda: change_plan(ROW, "starter", midnight(date(2026, 9, 15)), earliest=SEP_1,
                             last_finalized=date(2026, 9, 1), book=BOOK), "falls in 2026-09"),
        (lambda: move(ROW, "scale", date(2026, 9, 15)),
         "cannot move to scale: it is billed in USD and scale is priced in EUR"),
        (lambda: change_plan(ROW, "scale", midnight(date(2026, 9, 15)), earliest=SEP_1,
                             last_finalized=None, book=BOOK,
                             customer=Customer("acme", "c1", currency="USD")),
         "cannot move to scale: customer 'c1' is billed in USD, not EUR"),
    ]  # fmt: skip
    for change, problem in refusals:
        with pytest.raises(LifecycleError, match=problem):
            change()


def test_a_price_revision_moves_to_the_revised_plan_and_compounds_on_an_earlier_one() -> None:
    def uplift(row: Subscription, percent: str, day: date) -> Subscription:
        return revise(row, Decimal(percent), day, earliest=date(2026, 9, 1),
                      last_finalized=date(2026, 9, 1), book=BOOK)  # fmt: skip

    revised = uplift(ROW, "5", date(2027, 1, 1))
    assert revised.changes == ((midnight(date(2027, 1, 1)), "growth@+5%"),)
    again = uplift(revised, "-2", date(2028, 1, 1))
    assert again.changes[-1] == (midnight(date(2028, 1, 1)), "growth@+2.9%")
    moved = move(revised, "starter", date(2027, 3, 1))  # a new plan starts at its list price
    assert uplift(moved, "10", date(2027, 4, 1)).changes[-1] == (
        midnight(date(2027, 4, 1)),
        "starter@+10%",
    )
    refusals = [
        (lambda: uplift(ROW, "0", date(2027, 1, 1)), "changes no price"),
        (lambda: uplift(ROW, "-100", date(2027, 1, 1)), "above -100%"),
        (lambda: uplift(ROW, "5", date(2026, 9, 20)), "finalized up to 2026-09"),
        (
            lambda: uplift(revised, "5", date(2026, 12, 1)),
            re.escape("already changes to growth@+5%"),
        ),
    ]
    for change, problem in refusals:
        with pytest.raises(LifecycleError, match=problem):
            change()


def test_a_second_change_for_the_same_day_replaces_the_first_or_undoes_it() -> None:
    day = date(2026, 9, 15)
    upgraded = move(ROW, "starter", day)
    assert move(upgraded, "starter@+5%", day).changes == ((midnight(day), "starter@+5%"),)
    assert move(upgraded, "growth", day).changes == ()
    with pytest.raises(LifecycleError, match="is on growth then already"):
        move(ROW, "growth", day)


def test_a_coupon_is_taken_on_once_ended_from_a_day_and_refused_with_its_reason() -> None:
    taken = add_coupon(ROW, "welcome", date(2026, 10, 5), last_finalized=date(2026, 9, 1),
                       book=BOOK)  # fmt: skip
    assert taken.coupons == (AppliedCoupon(date(2026, 10, 5), "welcome"),)
    ended = remove_coupon(taken, "welcome", date(2026, 12, 1), last_finalized=None)
    assert ended.coupons == (AppliedCoupon(date(2026, 10, 5), "welcome", date(2026, 12, 1)),)
    # Ended before its first period starts: it discounts nothing, so it goes.
    assert remove_coupon(taken, "welcome", date(2026, 10, 1), last_finalized=None).coupons == ()
    # Once ended it may be taken on again.
    again = add_coupon(ended, "welcome", date(2027, 1, 5), last_finalized=None, book=BOOK)
    assert [c.day for c in again.coupons] == [date(2026, 10, 5), date(2027, 1, 5)]
    euros = Subscription("acme", "s2", "c1", "scale", START)
    for attempt, problem in (
        (lambda: add_coupon(taken, "welcome", date(2026, 11, 1), last_finalized=None,
                            book=BOOK), "has coupon 'welcome' already"),
        (lambda: add_coupon(ROW, "welcome", date(2026, 9, 5), last_finalized=date(2026, 9, 1),
                            book=BOOK), "finalized"),
        (lambda: add_coupon(ROW, "welcome", date(2026, 8, 1), last_finalized=None, book=BOOK),
         "apply it after that"),
        (lambda: add_coupon(euros, "welcome", date(2026, 9, 5), last_finalized=None,
                            book=BOOK), "billed in EUR"),
        (lambda: add_coupon(ROW, "gift", date(2026, 9, 5), last_finalized=None, book=BOOK),
         "not in the price book"),
        (lambda: remove_coupon(ROW, "welcome", date(2026, 9, 5), last_finalized=None),
         "no coupon 'welcome'"),
    ):  # fmt: skip
        with pytest.raises(LifecycleError, match=problem):
            attempt()


def test_an_immediate_upgrade_takes_effect_at_the_next_whole_second_after_its_lead() -> None:
    now = datetime(2026, 9, 20, 14, 3, 7, 300_000, tzinfo=UTC)
    when = registry.FromDay(None, False, now, timedelta(minutes=6), immediately=True)
    instant = datetime(2026, 9, 20, 14, 3, 9, tzinfo=UTC)  # now + 1 s, rounded up
    assert when.instant == instant and when.moment(ROW) == instant
    upgraded = registry.plan_change("starter", when, BOOK).apply(ROW, None, None)
    assert upgraded.changes == ((instant, "starter"),)
    assert upgraded.plan_at(instant - MS) == "growth" and upgraded.plan_at(instant) == "starter"
    assert upgraded.plan_on(date(2026, 9, 20)) == "growth"  # as the day began
    on_the_second = registry.FromDay(None, False, instant - timedelta(seconds=1), timedelta(0),
                                     immediately=True)  # fmt: skip
    assert on_the_second.instant == instant  # a whole second is not rounded further
    with pytest.raises(LifecycleError, match="takes no day"):
        registry.FromDay(date(2026, 9, 25), False, now, timedelta(0), immediately=True)
    # A dated change already planned for later: an immediate one does not jump it.
    planned = move(ROW, "starter", date(2026, 10, 1))
    with pytest.raises(LifecycleError, match="changes are made in time order"):
        registry.plan_change("growth@+5%", when, BOOK).apply(planned, None, None)
    # Before the subscription started, or into a finalized period: refused as any change.
    early = registry.FromDay(None, False, START - timedelta(hours=1), timedelta(0), True)
    with pytest.raises(LifecycleError, match="change it after that"):
        registry.plan_change("starter", early, BOOK).apply(ROW, None, None)
    with pytest.raises(LifecycleError, match="falls in 2026-09"):
        registry.plan_change("starter", when, BOOK).apply(ROW, date(2026, 9, 1), None)


def test_a_feature_is_given_to_one_subscription_and_revoked_from_a_day() -> None:
    pack = Entitlement(feature="api", kind="metered", meter="api_calls", limit=Decimal(500))
    given = grant_feature(ROW, pack, date(2026, 9, 1), None, BOOK)
    (granted,) = given.features
    assert granted.feature == "api" and granted.in_force(date(2026, 9, 1))
    assert given.terms().features == given.features
    revoked = revoke_feature(given, "api", date(2026, 10, 1))
    assert revoked.features[0].ended == date(2026, 10, 1)
    assert not revoked.features[0].in_force(date(2026, 10, 1))
    assert revoke_feature(given, "api", date(2026, 9, 1)).features == ()  # not started yet
    with pytest.raises(LifecycleError, match="was given no 'sso'"):
        revoke_feature(given, "sso", date(2026, 9, 1))
    with pytest.raises(LifecycleError, match="ends after it starts"):
        grant_feature(ROW, pack, date(2026, 9, 1), date(2026, 9, 1), BOOK)
    unknown = Entitlement(feature="x", kind="metered", meter="nope", limit=Decimal(1))
    with pytest.raises(LifecycleError, match="not in the price book"):
        grant_feature(ROW, unknown, date(2026, 9, 1), None, BOOK)
