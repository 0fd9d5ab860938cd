"""Prepaid credits against a plain Decimal computation, property-based: whatever the
lines and the grants, credits go in the declared order, each up to its balance and what
is left to bill, never below zero; top-ups bill a paid grant once, in its period."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.credits import FREE, PAID, Grant, credit_lines, top_up_lines
from invoicing.invoice import USAGE, InvoiceLine
from rating.period import Period
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
