"""Fixed-point money and the rounding rule of invoice lines."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.store import nanos_to_decimal_array
from invoicing.summary import Subscriber, summarize
from rating.money import INT64_MAX, MoneyError, from_nanos, round_to_minor_unit, to_nanos
from rating.plans import parse_price_book


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


def test_an_invoice_total_is_the_sum_of_its_rounded_lines() -> None:
    rows = [
        {"tenant": "t", "subscription": "s", "plan": "p", "plan_version": 1, "meter": m,
         "group_key": "", "currency": "USD", "quantity": 1, "amount": Decimal("0.005")}
        for m in ("a", "b", "c")
    ]  # fmt: skip
    book = parse_price_book(
        {"meters": [{"id": m} for m in "abc"],
         "plans": [{"id": "p", "currency": "USD", "fixed_fees": [{"id": "f", "amount": "1"}],
                    "charges": [{"meter": m, "model": "per_unit", "unit_price": "1"}
                                for m in "abc"]}]},
        "test",
    )  # fmt: skip
    summary = summarize(
        date(2026, 10, 1), rows, book, [Subscriber("t", "s", "p", date(2026, 10, 1))]
    )
    assert [line.amount for line in summary.lines] == [Decimal("0.01")] * 3 + [Decimal("1.00")]
    assert summary.subscription_totals()[("t", "s")] == ("p", "USD", Decimal("1.03"))
    assert summary.currency_totals() == {"USD": Decimal("1.03")}
