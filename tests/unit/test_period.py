"""Slices of a period under plan versions, fixed fees prorated by day, and the
commitment true-up, each checked against a plain Decimal computation."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book, parse_price_book
from rating.money import from_nanos
from rating.period import (
    MAX_ANCHOR,
    Period,
    commitment_true_up,
    fixed_fee_lines,
    midnight,
    plan_at,
    plan_on,
    prorate,
    slices,
    subscription_slices,
)
from rating.plans import PriceBook

SEPTEMBER = Period(date(2026, 9, 1))


def book(*versions: dict[str, Any]) -> PriceBook:
    base = {"id": "pro", "currency": "USD", "fixed_fees": [{"id": "platform", "amount": "30"}],
            "commitment": "100"}  # fmt: skip
    return parse_price_book(
        {"meters": [{"id": "calls"}],
         "plans": [{**base, "version": n, **v} for n, v in enumerate(versions, start=1)]},
        "test",
    )  # fmt: skip


def test_a_month_has_its_calendar_days() -> None:
    assert (SEPTEMBER.days, Period(date(2028, 2, 1)).days, Period(date(2026, 12, 1)).end) == (
        30, 29, date(2027, 1, 1),
    )  # fmt: skip


def test_a_version_taking_effect_mid_period_cuts_it_in_two() -> None:
    found = slices(book({}, {"effective_from": "2026-09-21", "commitment": "200"}), "pro",
                   SEPTEMBER, active_from=date(2026, 1, 1))  # fmt: skip
    assert [(s.plan.version, s.start, s.end, s.days) for s in found] == [
        (1, date(2026, 9, 1), date(2026, 9, 21), 20),
        (2, date(2026, 9, 21), date(2026, 10, 1), 10),
    ]


def test_a_subscription_starting_and_ending_inside_the_period_is_billed_for_its_days() -> None:
    found = slices(book({}), "pro", SEPTEMBER, date(2026, 9, 16), date(2026, 9, 26))
    assert [(s.start, s.days) for s in found] == [(date(2026, 9, 16), 10)]
    (fee,) = fixed_fee_lines(found[0], SEPTEMBER)
    assert (fee.amount, fee.description) == (Decimal("10.00"), "platform (10/30 days)")


def test_no_slice_outside_the_active_days_or_before_the_first_version() -> None:
    assert slices(book({}), "pro", SEPTEMBER, date(2026, 10, 1)) == []
    late = book({"effective_from": "2026-09-11"})
    assert [s.days for s in slices(late, "pro", SEPTEMBER, date(2026, 1, 1))] == [20]


def test_a_whole_period_bills_the_whole_fee_and_rounds_a_third_half_up() -> None:
    (whole,) = slices(book({}), "pro", SEPTEMBER, date(2026, 1, 1))
    assert fixed_fee_lines(whole, SEPTEMBER)[0].amount == Decimal("30.00")
    assert prorate(Decimal("10"), 1, 3, 2) == Decimal("3.33")
    assert prorate(Decimal("0.05"), 1, 2, 2) == Decimal("0.03")  # 0.025 rounds up
    assert prorate(Decimal("1000"), 7, 31, 0) == Decimal("226")  # JPY: 225.8…


def test_the_true_up_is_the_shortfall_against_the_prorated_commitment() -> None:
    (whole,) = slices(book({}), "pro", SEPTEMBER, date(2026, 1, 1))
    assert commitment_true_up(whole, SEPTEMBER, [Decimal("30.00"), Decimal("45.50")]) == Decimal(
        "24.50"
    )
    assert commitment_true_up(whole, SEPTEMBER, [Decimal("130")]) == 0
    (half,) = slices(book({}), "pro", SEPTEMBER, date(2026, 9, 16))
    assert commitment_true_up(half, SEPTEMBER, [Decimal("15.00")]) == Decimal("35.00")


@given(
    nanos=st.integers(0, 10**17),
    days=st.integers(0, 31),
    period_days=st.sampled_from([28, 29, 30, 31]),
    digits=st.sampled_from([0, 2, 3]),
)
def test_proration_equals_the_decimal_computation(
    nanos: int, days: int, period_days: int, digits: int
) -> None:
    days = min(days, period_days)
    amount = from_nanos(nanos)
    with localcontext(prec=80):
        expected = (amount * days / period_days).quantize(
            Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP
        )
    assert prorate(amount, days, period_days, digits) == expected


def test_a_subscription_that_changes_plan_is_sliced_by_each_plan_and_its_versions() -> None:
    book = load_price_book(PRICE_BOOK)
    september = Period(date(2026, 9, 1))
    changes = ((midnight(date(2026, 9, 11)), "growth"), (midnight(date(2026, 9, 25)), "scale"))
    found = subscription_slices(book, "starter", september, date(2026, 9, 1), changes=changes)
    assert [(s.plan.id, s.plan.version, s.start.day, s.end.day) for s in found] == [
        ("starter", 1, 1, 11), ("growth", 1, 11, 16), ("growth", 2, 16, 25), ("scale", 1, 25, 1),
    ]  # fmt: skip
    assert plan_on("starter", changes, date(2026, 9, 24)) == "growth"
    ended = subscription_slices(book, "starter", september, date(2026, 9, 1), date(2026, 9, 20),
                                changes=changes)  # fmt: skip
    assert [s.plan.id for s in ended] == ["starter", "growth", "growth"]


@settings(max_examples=500, deadline=None)
@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2200, 12, 31)),
    anchor=st.integers(1, MAX_ANCHOR),
)
def test_every_day_falls_in_one_period_starting_on_the_anchor_day(day: date, anchor: int) -> None:
    period = Period.of(day, anchor)
    assert period.start <= day < period.end and period.start.day == anchor
    assert 28 <= period.days <= 31
    assert period.shifted(1).start == period.end and period.shifted(-1).end == period.start
    assert Period.labelled(period.label, anchor) == period and period.label.day == 1
    assert Period.of(period.end, anchor) == period.shifted(1)


def test_a_period_is_named_by_the_month_it_starts_in() -> None:
    assert Period.of(date(2026, 10, 3), 15) == Period(date(2026, 9, 15))
    assert Period.of(date(2026, 10, 3), 15).label == date(2026, 9, 1)
    assert Period.of(date(2026, 1, 14), 15).label == date(2025, 12, 1)
    assert Period.of(date(2026, 10, 3)).end == date(2026, 11, 1)  # calendar months by default


@settings(max_examples=300, deadline=None)
@example(second=86_400, nanos=30_000_000_000, commitment_cents=10_000)  # a midnight
@given(
    second=st.integers(1, SEPTEMBER.seconds - 1),
    nanos=st.integers(0, 10**15),
    commitment_cents=st.integers(0, 10**9),
)
def test_an_immediate_change_splits_fees_and_commitment_by_the_second(
    second: int, nanos: int, commitment_cents: int
) -> None:
    """An upgrade at an instant inside September: two slices that meet there, whose fees
    and commitments are the Decimal computation by the second (rounded half up to cents)."""
    fee = from_nanos(nanos)
    commitment = Decimal(commitment_cents).scaleb(-2)
    plans = {"id": "x", "currency": "USD", "fixed_fees": [{"id": "platform", "amount": str(fee)}],
             "commitment": str(commitment)}  # fmt: skip
    priced = parse_price_book(
        {"meters": [{"id": "calls"}], "plans": [{**plans, "id": "small"}, {**plans, "id": "big"}]},
        "test",
    )  # fmt: skip
    at = midnight(SEPTEMBER.start) + timedelta(seconds=second)
    found = subscription_slices(priced, "small", SEPTEMBER, date(2026, 1, 1),
                                changes=((at, "big"),))  # fmt: skip
    assert [s.plan.id for s in found] == ["small", "big"]
    first, then = found
    cut = None if second % 86_400 == 0 else at  # a midnight is a change for a day
    assert (first.ends_at, then.starts_at) == (cut, cut) and first.starts_at is None
    assert (first.seconds, then.seconds) == (second, SEPTEMBER.seconds - second)
    assert first.start == SEPTEMBER.start and then.end == SEPTEMBER.end
    assert plan_at("small", ((at, "big"),), at - timedelta(microseconds=1)) == "small"
    assert plan_at("small", ((at, "big"),), at) == "big"
    for part in found:
        (line,) = fixed_fee_lines(part, SEPTEMBER)
        with localcontext(prec=80):
            share = Decimal(part.seconds) / SEPTEMBER.seconds
            expected_fee = (fee * share).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            due = (commitment * share).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert line.amount == expected_fee
        assert commitment_true_up(part, SEPTEMBER, [line.amount]) == max(
            Decimal(0), due - line.amount
        )
        if part.seconds % 86_400:
            assert re.fullmatch(r"platform \(\d+(\.\d{1,4})?/30 days\)", line.description)


def test_a_change_at_a_midnight_is_a_change_for_a_day() -> None:
    """Whole days prorate by the second exactly as by day: no invoice moves."""
    priced = book({})
    at = midnight(date(2026, 9, 11))
    (before, after) = subscription_slices(
        load_price_book(PRICE_BOOK), "starter", SEPTEMBER, date(2026, 1, 1),
        changes=((at, "growth"),),
    )[:2]  # fmt: skip
    assert (before.ends_at, after.starts_at, before.days, before.end) == (
        None, None, 10, date(2026, 9, 11),
    )  # fmt: skip
    (whole,) = slices(priced, "pro", SEPTEMBER, date(2026, 1, 1))
    assert prorate(Decimal(30), 10 * 86_400, whole.seconds, 2) == prorate(Decimal(30), 10, 30, 2)
