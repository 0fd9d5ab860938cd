"""Prepaid credits against a plain Decimal computation, property-based: whatever the
lines and the grants, credits go in the declared order, each up to its balance and what
is left to bill, never below zero; top-ups bill a paid grant once, in its period."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.charges import Pricing
from invoicing.credits import (
    FREE,
    PAID,
    ROLLOVER,
    Grant,
    consumed,
    credit_lines,
    rollover_grants,
    top_up_lines,
)
from invoicing.invoice import CREDIT, FIXED_FEE, USAGE, InvoiceLine
from rating.oracle import rate_charge
from rating.period import Period
from rating.plans import PriceBook
from subscriptions.model import Subscription

SUB = Subscription("t", "s", "c", "growth", datetime(2026, 1, 1, tzinfo=UTC))
PERIOD = Period(date(2026, 8, 1))
cents = st.integers(-50_000, 500_000).map(lambda c: Decimal(c).scaleb(-2))
days = st.integers(-60, 60).map(lambda k: date(2026, 8, 1) + timedelta(days=k))


@st.composite
def grants(draw: st.DrawFn) -> Grant:
    start = draw(days)
    expires = draw(st.none() | days)
    return Grant("t", f"G{draw(st.integers(0, 10**6))}", draw(st.sampled_from(["c", "other"])),
                 draw(st.sampled_from(["", "s", "s2"])), draw(st.sampled_from(["USD", "EUR"])),
                 draw(st.integers(1, 100_000).map(lambda c: Decimal(c).scaleb(-2))),
                 draw(st.integers(0, 3)), start, expires, voided=draw(st.booleans()))  # fmt: skip


def line(amount: Decimal) -> InvoiceLine:
    return InvoiceLine(USAGE, "m", "", "growth", 1, PERIOD.label, "m", Decimal(1), "u", "USD",
                       amount, amount)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(amounts=st.lists(cents, max_size=6), given_grants=st.lists(grants(), max_size=6,
       unique_by=lambda g: g.grant_id), used=st.data())  # fmt: skip
def test_credits_are_the_greedy_decimal_computation_in_the_declared_order(
    amounts: list[Decimal], given_grants: list[Grant], used: st.DataObject
) -> None:
    taken = {g.grant_id: used.draw(st.integers(0, int(g.amount * 100)).map(
        lambda c: Decimal(c).scaleb(-2))) for g in given_grants}  # fmt: skip
    applied = credit_lines([line(a) for a in amounts], given_grants, taken, sub=SUB,
                           currency="USD", period=PERIOD)  # fmt: skip

    # The oracle, in plain Decimal: usable grants sorted by the declared order.
    due = sum(amounts, Decimal(0))
    usable = sorted(
        (g for g in given_grants if not g.voided and g.customer == "c"
         and g.subscription in ("", "s") and g.currency == "USD"
         and g.effective_from < PERIOD.end
         and (g.expires_on is None or g.expires_on > PERIOD.start)),
        key=lambda g: (g.priority, g.expires_on or date.max, g.effective_from, g.grant_id),
    )  # fmt: skip
    expected = []
    for g in usable:
        take = min(g.amount - taken[g.grant_id], due)
        if due <= 0:
            break
        if take > 0:
            expected.append((g.grant_id, take))
            due -= take
    assert [(x.item, -x.amount) for x in applied] == expected
    assert sum(amounts, Decimal(0)) + sum(x.amount for x in applied) >= min(
        sum(amounts, Decimal(0)), Decimal(0)
    ), "never below zero (nor below what was already negative)"


def test_a_paid_grant_is_billed_once_in_the_period_it_takes_effect() -> None:
    paid = Grant("t", "P", "c", "", "USD", Decimal(20), effective_from=date(2026, 8, 10),
                 kind=PAID, price=Decimal(18))  # fmt: skip
    free = Grant("t", "F", "c", "", "USD", Decimal(5), effective_from=date(2026, 8, 10),
                 kind=FREE)  # fmt: skip
    assert [(x.item, x.amount) for x in top_up_lines([paid, free], SUB, "s", PERIOD)] == [
        ("P", Decimal(18))
    ]
    assert top_up_lines([paid], SUB, "s", Period(date(2026, 9, 1))) == []
    assert top_up_lines([paid], SUB, "another", PERIOD) == [], "a customer's first only"


UNIT_CHARGES = {
    "allowance": {"model": "allowance", "included": "1000", "overage_price": "0.002",
                  "rollover": "500"},
    "per_unit": {"model": "per_unit", "unit_price": "0.0004"},
    "graduated": {"model": "graduated", "tiers": [
        {"up_to": 100, "unit_price": "0"}, {"up_to": 1000, "unit_price": "0.01"},
        {"unit_price": "0.004", "flat_fee": "1"}]},
}  # fmt: skip


def unit_book(model: str) -> PriceBook:
    return PriceBook.model_validate({
        "meters": [{"id": "calls", "unit": "call"}],
        "plans": [{"id": "p", "currency": "USD",
                   "charges": [{"meter": "calls", **UNIT_CHARGES[model]}]}],
    })  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(sorted(UNIT_CHARGES)), quantity=st.integers(0, 50_000),
       units=st.integers(1, 50_000), due_cents=st.integers(0, 10**7))  # fmt: skip
def test_a_grant_in_units_bills_as_if_that_many_fewer_were_used(
    model: str, quantity: int, units: int, due_cents: int
) -> None:
    """Against the Decimal oracle: the credit is what the top units cost (the line less
    its price with that many fewer), in cents half up and at most what is left to bill;
    the units taken are the fewest that take it off (free units are not spent)."""
    book = unit_book(model)
    charge = book.plan("p").charges[0]
    pricing = Pricing.of(book)
    rated = rate_charge(charge, quantity, 0).amount
    billed = rated.quantize(Decimal("0.01"), ROUND_HALF_UP)
    line = InvoiceLine(USAGE, "calls", "", "p", 1, PERIOD.label, "calls", Decimal(quantity),
                       "call", "USD", rated, billed)  # fmt: skip
    fee = Decimal(due_cents).scaleb(-2)
    extra = InvoiceLine(FIXED_FEE, "fee", "", "p", 1, PERIOD.label, "fee", Decimal(0), "",
                        "USD", fee, fee)  # fmt: skip
    grant = Grant("t", "G", "c", "", "", Decimal(units), meter="calls")
    applied = credit_lines([line, extra], [grant], {}, sub=SUB, currency="USD", period=PERIOD,
                           unit_value=pricing.unit_credit)  # fmt: skip

    asked = min(units, quantity)
    floor = rate_charge(charge, quantity - asked, 0).amount
    worth = rated - floor
    fewest = next(k for k in range(asked + 1)
                  if rate_charge(charge, quantity - k, 0).amount == floor)  # fmt: skip
    take = min(worth.quantize(Decimal("0.01"), ROUND_HALF_UP), line.amount + extra.amount)
    if fewest == 0 or take <= 0:
        assert applied == []
        return
    (credit,) = applied
    assert (credit.kind, credit.item, credit.quantity) == (CREDIT, "G", Decimal(fewest))
    assert credit.amount == -take and credit.rated == -worth
    assert consumed(credit) == fewest


@settings(max_examples=200, deadline=None)
@given(used=st.integers(0, 3000))
def test_unused_included_units_roll_over_up_to_the_cap_for_the_next_period_only(
    used: int,
) -> None:
    book = unit_book("allowance")
    plan = book.plan("p")
    line = InvoiceLine(USAGE, "calls", "", "p", 1, PERIOD.label, "calls", Decimal(used),
                       "call", "USD", Decimal(0), Decimal(0))  # fmt: skip
    (carried,) = rollover_grants(SUB, PERIOD, plan, [line])
    expected = min(max(Decimal(1000) - used, Decimal(0)), Decimal(500))
    assert (carried.amount, carried.meter, carried.kind) == (expected, "calls", ROLLOVER)
    assert carried.voided == (expected == 0)
    following = PERIOD.shifted(1)
    assert (carried.effective_from, carried.expires_on) == (following.start, following.end)
    assert carried.usable(SUB, "USD", following) != carried.voided
    assert not carried.usable(SUB, "USD", PERIOD) and not carried.usable(
        SUB, "USD", following.shifted(1)
    )
    assert carried.grant_id == rollover_grants(SUB, PERIOD, plan, [])[0].grant_id
