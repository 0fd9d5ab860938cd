"""Coupons on invoices: what each takes off, in the declared order, for how long, and
that no mix of them takes a period below zero."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.model import RatedTotal
from invoicing.charges import Pricing
from invoicing.compose import compose_invoice
from invoicing.invoice import DISCOUNT, Invoice
from rating.loading import parse_price_book
from rating.period import midnight
from rating.plans import PriceBook
from subscriptions.model import AppliedCoupon, Subscription

OCT = date(2026, 10, 1)


def book(coupons: list[dict[str, Any]], discounts: tuple[str, ...] = ()) -> PriceBook:
    return parse_price_book(
        {"meters": [{"id": "calls"}, {"id": "tokens"}],
         "plans": [{"id": "p", "currency": "USD", "discounts": list(discounts),
                    "fixed_fees": [{"id": "base", "amount": "30"}],
                    "charges": [{"meter": m, "model": "per_unit", "unit_price": "1"}
                                for m in ("calls", "tokens")]}],
         "coupons": coupons},
        "test",
    )  # fmt: skip


def total(meter: str, quantity: int, period: date = OCT) -> RatedTotal:
    return RatedTotal("t", "s", meter, "", period, "p", 1, "USD", quantity, quantity * 10**9,
                      0, 0, 0, 0)  # fmt: skip


def invoice(
    priced: PriceBook,
    rows: list[RatedTotal],
    coupons: tuple[AppliedCoupon, ...] = (),
    period: date = OCT,
    started: date = date(2026, 9, 1),
) -> Invoice:
    sub = Subscription("t", "s", "c", "p", midnight(started), coupons=coupons)
    return compose_invoice(period, sub, customer=None, rows=rows, earlier=[],
                           pricing=Pricing.of(priced))  # fmt: skip


def discounts(found: Invoice) -> list[tuple[str, Decimal]]:
    return [(line.item, line.amount) for line in found.lines if line.kind == DISCOUNT]


ROWS = [total("calls", 50), total("tokens", 20)]  # with the 30 fee: 100.00


def test_a_percentage_off_the_period_takes_its_share_of_every_line() -> None:
    found = invoice(book([{"id": "twenty", "percent_off": 20}]), ROWS,
                    (AppliedCoupon(date(2026, 9, 15), "twenty"),))  # fmt: skip
    assert discounts(found) == [("twenty", Decimal("-20.00"))]
    assert found.subtotal == Decimal("80.00")


def test_an_amount_off_is_prorated_by_the_active_days_and_never_goes_below_zero() -> None:
    coupons = [{"id": "ten", "amount_off": "10", "currency": "USD"},
               {"id": "huge", "amount_off": "1000", "currency": "USD"}]  # fmt: skip
    # Started October 16: 16 of 31 days, so the fee and the amount off are prorated.
    found = invoice(book(coupons), ROWS, (AppliedCoupon(date(2026, 10, 16), "ten"),),
                    started=date(2026, 10, 16))  # fmt: skip
    assert discounts(found) == [("ten", Decimal("-5.16"))]  # 10 × 16/31 = 5.161…
    wiped = invoice(book(coupons), ROWS, (AppliedCoupon(OCT, "huge"),))
    assert wiped.subtotal == 0


def test_a_meters_coupon_comes_first_then_the_plans_then_the_periods() -> None:
    coupons = [{"id": "calls_off", "amount_off": "10", "currency": "USD", "meter": "calls"},
               {"id": "launch", "percent_off": 50},
               {"id": "loyal", "percent_off": 10}]  # fmt: skip
    found = invoice(book(coupons, discounts=("launch",)), ROWS,
                    (AppliedCoupon(OCT, "loyal"), AppliedCoupon(OCT, "calls_off")))  # fmt: skip
    # 100 less 10 off calls = 90; the plan's 50% of that = 45; then 10% of what is left.
    assert discounts(found) == [
        ("calls_off", Decimal("-10.00")), ("launch", Decimal("-45.00")),
        ("loyal", Decimal("-4.50")),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("terms", "billed_through"),
    [({"periods": 2}, date(2026, 10, 1)), ({"until": "2026-11-01"}, date(2026, 10, 1)),
     ({}, date(2027, 3, 1))],
)  # fmt: skip
def test_a_coupon_lasts_its_periods_or_until_its_day(
    terms: dict[str, Any], billed_through: date
) -> None:
    priced = book([{"id": "c", "percent_off": 10, **terms}])
    # Applied in September: September is its first period, October its second.
    applied = (AppliedCoupon(date(2026, 9, 20), "c"),)
    months = [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1),
              date(2027, 3, 1)]  # fmt: skip
    discounted = [
        m for m in months
        if discounts(invoice(priced, [total("calls", 10, m)], applied, m, date(2026, 8, 1)))
    ]  # fmt: skip
    assert discounted == [m for m in months if date(2026, 9, 1) <= m <= billed_through]


def test_a_removed_coupon_stops_at_the_period_it_was_removed_from() -> None:
    priced = book([{"id": "c", "percent_off": 10}])
    applied = (AppliedCoupon(date(2026, 9, 1), "c", ended=date(2026, 10, 1)),)
    assert discounts(invoice(priced, ROWS, applied, date(2026, 9, 1)))
    assert not discounts(invoice(priced, ROWS, applied, OCT))


def test_a_plans_discount_starts_with_each_subscription() -> None:
    priced = book([{"id": "intro", "percent_off": 25, "periods": 1}], discounts=("intro",))
    assert discounts(invoice(priced, ROWS, period=OCT, started=OCT)) == [
        ("intro", Decimal("-25.00"))
    ]
    assert not discounts(invoice(priced, ROWS, period=OCT, started=date(2026, 9, 1)))


@pytest.mark.parametrize(
    ("coupon", "problem"),
    [({"id": "x"}, "exactly one of percent_off and amount_off"),
     ({"id": "x", "amount_off": "5"}, "in a currency"),
     ({"id": "x", "percent_off": 101}, "less than or equal to 100"),
     ({"id": "x", "percent_off": 5, "periods": 2, "until": "2027-01-01"}, "not both"),
     ({"id": "x", "percent_off": 5, "meter": "nope"}, "not declared under meters")],
)  # fmt: skip
def test_a_coupon_the_book_cannot_apply_is_refused(coupon: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        book([coupon])


def test_a_plan_discount_in_another_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="takes off EUR, the plan bills USD"):
        book([{"id": "x", "amount_off": "5", "currency": "EUR"}], discounts=("x",))


coupon_terms = st.one_of(
    st.builds(lambda p: {"percent_off": str(p)},
              st.decimals(min_value=Decimal("0.01"), max_value=100, places=2)),
    st.builds(lambda a: {"amount_off": str(a), "currency": "USD"},
              st.decimals(min_value=Decimal("0.001"), max_value=500, places=3)),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    terms=st.lists(st.tuples(coupon_terms, st.sampled_from([None, "calls", "tokens"])),
                   min_size=1, max_size=5),
    quantities=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    started=st.integers(1, 31),
)  # fmt: skip
def test_no_mix_of_coupons_takes_a_period_below_zero_or_off_by_more_than_rounding(
    terms: list[tuple[dict[str, str], str | None]], quantities: tuple[int, int], started: int
) -> None:
    coupons = [{"id": f"c{n}", **off, **({"meter": meter} if meter else {})}
               for n, (off, meter) in enumerate(terms)]  # fmt: skip
    priced = book(coupons)
    rows = [total("calls", quantities[0] * 7), total("tokens", quantities[1])]
    applied = tuple(AppliedCoupon(OCT, c["id"]) for c in coupons)
    found = invoice(priced, rows, applied, started=date(2026, 10, started))
    lines = [line for line in found.lines if line.kind != DISCOUNT]
    off = [line for line in found.lines if line.kind == DISCOUNT]
    assert found.subtotal >= 0
    assert all(line.amount <= 0 for line in off)
    # The rounded discounts are the exact ones rounded once, as a running total.
    exact = -sum((line.rated for line in off), Decimal(0))
    rounded_once = exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert -sum((line.amount for line in off), Decimal(0)) == rounded_once
    assert exact <= sum((line.amount for line in lines), Decimal(0))
