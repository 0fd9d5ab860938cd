"""Revenue recognition's arithmetic against plain Decimal: a fee spread by day over any
span puts each month within a minor unit of its exact share, and the parts add up to the
fee exactly, whatever the amount, the span and the currency's minor unit."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.recognition import Entry, balances, spread

days = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))


@settings(max_examples=300, deadline=None)
@given(start=days, length=st.integers(1, 400), minor=st.integers(-10**12, 10**12),
       digits=st.sampled_from([0, 2, 3]))  # fmt: skip
def test_a_fee_spread_by_day_adds_up_exactly_and_each_month_is_within_a_minor_unit(
    start: date, length: int, minor: int, digits: int
) -> None:
    amount = Decimal(minor).scaleb(-digits)
    end = start + timedelta(days=length)
    parts = spread(amount, start, end, digits)
    assert sum((part for _, part in parts), Decimal(0)) == amount
    day, unit = start, Decimal(1).scaleb(-digits)
    for month, part in parts:
        assert month == day.replace(day=1) and part == part.quantize(unit)
        following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        share = amount * (min(end, following) - day).days / length
        assert abs(part - share) <= unit, (month, part, share)
        day = min(end, following)
    assert day == end


def test_the_deferred_balance_is_billed_to_date_less_earned_to_date() -> None:
    def entry(month: date, issued: date, amount: str) -> Entry:
        return Entry("INV", 1, "fixed_fee", "p", "USD", month, month, month, Decimal(amount),
                     issued)  # fmt: skip

    jan, feb, mar = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
    found = balances([entry(jan, date(2026, 2, 3), "10.00"), entry(feb, date(2026, 2, 3), "5.00"),
                      entry(feb, date(2026, 3, 2), "-1.00")], jan, mar)  # fmt: skip
    assert [(b.month, b.billed, b.recognized, b.deferred) for b in found] == [
        (jan, 0, Decimal("10.00"), Decimal("-10.00")),
        (feb, Decimal("15.00"), Decimal("4.00"), Decimal("1.00")),
        (mar, Decimal("-1.00"), 0, 0),
    ]
