"""Fixed-point money, the rounding rule of invoice lines, and how an invoice is composed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregation.model import RatedTotal
from base.clickhouse import nanos_to_decimal_array
from invoicing.charges import Pricing
from invoicing.compose import EarlierPeriod, compose_invoice
from invoicing.invoice import Invoice
from rating.loading import parse_price_book
from rating.money import INT64_MAX, MoneyError, from_nanos, round_to_minor_unit, to_nanos
from rating.period import midnight
from subscriptions.model import Customer, Subscription


@given(st.integers(-INT64_MAX, INT64_MAX))
def test_nanos_round_trip_through_decimal(nanos: int) -> None:
    assert to_nanos(from_nanos(nanos)) == nanos


def test_a_value_finer_than_a_nano_is_refused() -> None:
    with pytest.raises(MoneyError):
        to_nanos(Decimal("0.0000000005"))


@pytest.mark.parametrize(
    ("amount", "digits", "expected"),
    [("0.005", 2, "0.01"), ("0.004999999", 2, "0.00"), ("-0.005", 2, "-0.01"), ("12.5", 0, "13")],
)
def test_invoice_lines_round_half_up_to_the_minor_unit(
    amount: str, digits: int, expected: str
) -> None:
    assert round_to_minor_unit(Decimal(amount), digits) == Decimal(expected)


@given(st.lists(st.integers(-INT64_MAX, INT64_MAX), min_size=1, max_size=50))
def test_nano_amounts_become_exact_arrow_decimals(nanos: list[int]) -> None:
    as_arrow = nanos_to_decimal_array(np.array(nanos, dtype=np.int64))
    assert as_arrow.to_pylist() == [from_nanos(n) for n in nanos]


BOOK = parse_price_book(
    {"meters": [{"id": m} for m in "abc"],
     "plans": [{"id": "p", "currency": "USD", "fixed_fees": [{"id": "f", "amount": "1"}],
                "charges": [{"meter": m, "model": "per_unit", "unit_price": "1"}
                            for m in "abc"]}]},
    "test",
)  # fmt: skip
PERIOD = date(2026, 10, 1)
NANO = Decimal("1E-9")
SUB = Subscription("t", "s", "c", "p", midnight(PERIOD))


def rated_row(meter: str, quantity: int, amount: str) -> RatedTotal:
    return RatedTotal("t", "s", meter, "", PERIOD, "p", 1, "USD", quantity,
                      int(Decimal(amount).scaleb(9)), 0, 0, 0, 0)  # fmt: skip


def compose(
    rows: list[RatedTotal], rate: str = "0", earlier: tuple[EarlierPeriod, ...] = ()
) -> Invoice:
    return compose_invoice(
        PERIOD, SUB, customer=Customer("t", "c", tax_rate=Decimal(rate)), rows=rows,
        earlier=earlier, pricing=Pricing.of(BOOK),
    )  # fmt: skip


def test_an_invoice_total_is_the_sum_of_its_rounded_lines_and_their_tax() -> None:
    invoice = compose([rated_row(m, 1, "0.005") for m in "abc"], rate="10")
    assert [line.amount for line in invoice.lines] == [Decimal("0.01")] * 3 + [Decimal("1.00")]
    assert [line.tax for line in invoice.lines] == [Decimal("0.00")] * 3 + [Decimal("0.10")]
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("1.03"), Decimal("0.10"), Decimal("1.13"),
    )  # fmt: skip


def test_recomputing_an_invoice_gives_the_same_digest_whatever_the_decimal_scale() -> None:
    first = compose([rated_row("a", 1, "0.5")])
    # As the ledger reads it back: ClickHouse gives every Decimal(38, 9) at scale 9.
    stored = replace(first, lines=tuple(
        replace(line, quantity=line.quantity.quantize(NANO), rated=line.rated.quantize(NANO),
                amount=line.amount.quantize(NANO), tax=line.tax.quantize(NANO))
        for line in first.lines
    ))  # fmt: skip
    assert str(stored.lines[0].amount) != str(first.lines[0].amount)
    assert first.digest == stored.digest
    assert compose([rated_row("a", 2, "0.5")]).digest != first.digest


def test_an_earlier_finalized_period_is_adjusted_by_the_difference_only() -> None:
    september = date(2026, 9, 1)
    billed = compose_invoice(
        september, SUB, customer=None, rows=[rated_row("a", 3, "3")], earlier=[],
        pricing=Pricing.of(BOOK),
    ).lines  # fmt: skip
    now = EarlierPeriod(september, [rated_row("a", 5, "5"), rated_row("b", 1, "1")], billed)
    invoice = compose([], earlier=(now,))
    adjustments = [line for line in invoice.lines if line.applies_to == september]
    assert [(line.item, line.quantity, line.amount) for line in adjustments] == [
        ("a", Decimal(2), Decimal("2.00")), ("b", Decimal(1), Decimal("1.00")),
    ]  # fmt: skip
    assert adjustments[0].description == "adjustment for 2026-09: a"
    unchanged = EarlierPeriod(september, [rated_row("a", 3, "3")], billed)
    assert all(line.applies_to == PERIOD for line in compose([], earlier=(unchanged,)).lines)


def test_a_charge_whose_zero_usage_reaches_its_first_tier_bills_its_flat_fee_without_events() -> (
    None
):
    tiers = [{"up_to": 100, "unit_price": "1", "flat_fee": "25"}, {"unit_price": "0.5"}]
    book = parse_price_book(
        {"meters": [{"id": "a"}, {"id": "b"}],
         "plans": [{"id": "p", "currency": "USD", "charges": [
             {"meter": "a", "model": "graduated", "tiers": tiers, "zero_usage": "first_tier"},
             {"meter": "b", "model": "graduated", "tiers": tiers}]}]},
        "test",
    )  # fmt: skip

    def usage(rows: list[RatedTotal]) -> list[tuple[str, Decimal, Decimal]]:
        invoice = compose_invoice(PERIOD, SUB, customer=None, rows=rows, earlier=[],
                                  pricing=Pricing.of(book))  # fmt: skip
        return [(line.item, line.quantity, line.amount) for line in invoice.lines]

    # No event at all: the first tier's flat fee of a, nothing of b (today's rule).
    assert usage([]) == [("a", Decimal(0), Decimal("25.00"))]
    # Once an event reached it, the rated total is the line, and no second one is added.
    assert usage([rated_row("a", 2, "27")]) == [("a", Decimal(2), Decimal("27.00"))]


def test_a_weighted_sum_is_held_to_the_end_of_the_slice_the_invoice_bills() -> None:
    """The worker holds a gauge's last value to the end of the period; the subscription
    ended on October 11, after its last report, so the invoice holds it to then."""
    book = parse_price_book(
        {"meters": [{"id": "disk", "aggregation": "weighted_sum", "per": "hour"}],
         "plans": [{"id": "p", "currency": "USD", "charges": [
             {"meter": "disk", "model": "per_unit", "unit_price": "0.01"}]}]},
        "test",
    )  # fmt: skip
    hour = 3_600_000
    reported = int(datetime(2026, 10, 10, tzinfo=UTC).timestamp()) * 1000
    # 5 GB held for 10 hours before, then 8 GB from October 10.
    integral, last = 5 * 10 * hour, 8
    to_period_end = (integral + last * 22 * 24 * hour) // hour  # October 10 to November 1
    row = replace(rated_row("disk", to_period_end, "0"), aggregate=integral, last_value=last,
                  value_at=reported)  # fmt: skip
    ended = replace(SUB, ended_at=midnight(date(2026, 10, 11)))
    invoice = compose_invoice(PERIOD, ended, customer=None, rows=[row], earlier=[],
                              pricing=Pricing.of(book))  # fmt: skip
    (line,) = invoice.lines
    assert line.quantity == 50 + 8 * 24  # GB-hours: to the end, October 11
    assert line.amount == Decimal("2.42")
