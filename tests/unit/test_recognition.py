"""Revenue recognition's arithmetic against plain Decimal: a fee spread by day over any
span puts each month within a minor unit of its exact share, and the parts add up to the
fee exactly, whatever the amount, the span and the currency's minor unit."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.credits import PAID, Grant
from invoicing.invoice import CREDIT, FINALIZED, TOP_UP, Invoice, InvoiceLine
from invoicing.recognition import NOT_YET, Entry, balances, prepaid_schedule, spread

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


def _invoice(period: date, lines: list[InvoiceLine]) -> Invoice:
    return Invoice("t", "s", "c", period, "USD", Decimal(0), tuple(lines), FINALIZED,
                   issued_on=period + timedelta(days=31))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(price_cents=st.integers(1, 10**7), amount_cents=st.integers(1, 10**7),
       taken=st.lists(st.integers(1, 10**6), max_size=6), expired=st.booleans())  # fmt: skip
def test_a_paid_top_up_is_earned_as_its_credit_is_used_and_the_rest_at_its_end(
    price_cents: int, amount_cents: int, taken: list[int], expired: bool
) -> None:
    """Against Decimal: by a month's end, the price times the share of the credit used so
    far (at most all of it), in cents half up; the rest when the grant expires, deferred
    until then; the parts add up to the price."""
    price, amount = Decimal(price_cents).scaleb(-2), Decimal(amount_cents).scaleb(-2)
    start = date(2026, 1, 1)
    grant = Grant("t", "G", "c", "", "USD", amount, 0, start, date(2026, 9, 1), PAID, price)
    top_up = InvoiceLine(TOP_UP, "G", "", "", 0, start, "prepaid", Decimal(0), "", "USD",
                         price, price)  # fmt: skip
    months = [date(2026, 1 + k, 1) for k in range(len(taken))]
    credits = [_invoice(month, [InvoiceLine(CREDIT, "G", "", "", 0, month, "credit",
                                            Decimal(0), "", "USD", -Decimal(c).scaleb(-2),
                                            -Decimal(c).scaleb(-2))])
               for month, c in zip(months, taken, strict=True)]  # fmt: skip
    today = date(2026, 10, 1) if expired else date(2026, 8, 1)
    entries = prepaid_schedule([_invoice(start, [top_up]), *credits], {"G": grant}, today)
    assert sum((e.amount for e in entries), Decimal(0)) == price
    assert all(e.issued_on == start + timedelta(days=31) for e in entries)
    used = Decimal(0)
    for month, c in zip(months, taken, strict=True):
        used += Decimal(c).scaleb(-2)
        by_then = sum((e.amount for e in entries if e.month <= month), Decimal(0))
        share = (price * min(used, amount) / amount).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert by_then == share
    rest = [e for e in entries if e.month not in months]
    left = price - sum((e.amount for e in entries if e.month in months), Decimal(0))
    assert sum((e.amount for e in rest), Decimal(0)) == left
    if left:
        (last,) = rest
        assert last.month == (date(2026, 9, 1) if expired else NOT_YET)
