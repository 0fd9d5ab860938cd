"""The per-unit kernel against the Decimal oracle: named cases, then random ones."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating import oracle
from rating.money import INT64_MAX, from_nanos
from rating.plans import parse_price_book
from rating.rater import RatingOverflowError, rate
from rating.table import ChargeTable


def table_for(price: str, scale: int = 0) -> ChargeTable:
    book = parse_price_book(
        {
            "meters": [{"id": "m", "scale": scale}],
            "plans": [{"id": "p", "currency": "USD",
                       "charges": [{"meter": "m", "model": "per_unit", "unit_price": price}]}],
        },
        "test",
    )  # fmt: skip
    return ChargeTable.compile(book)


def rate_one(price: str, quantity: int, scale: int = 0) -> Decimal:
    amounts = rate(table_for(price, scale), np.array([0]), np.array([quantity]))
    return from_nanos(int(amounts[0]))


@pytest.mark.parametrize(
    ("case", "price", "quantity", "scale", "expected"),
    [
        ("zero units cost nothing", "0.25", 0, 0, "0"),
        ("a free meter costs nothing however much is used", "0", 10**15, 0, "0"),
        ("one unit costs the unit price", "0.000000001", 1, 0, "0.000000001"),
        ("a million calls at 0.0004 cost 400", "0.0004", 1_000_000, 0, "400"),
        ("a scaled quantity is divided by its scale", "0.5", 1_500, 3, "0.75"),
        ("a sub-nano result rounds half up", "0.000000001", 500, 3, "0.000000001"),
        ("just under half a nano rounds down", "0.000000001", 499, 3, "0"),
    ],
)
def test_per_unit_cases(case: str, price: str, quantity: int, scale: int, expected: str) -> None:
    assert rate_one(price, quantity, scale) == Decimal(expected), case
    assert oracle.per_unit(quantity, scale, Decimal(price)) == Decimal(expected), case


def test_an_amount_beyond_64_bit_nano_units_raises_and_names_the_charge() -> None:
    with pytest.raises(RatingOverflowError, match="plan 'p', meter 'm'"):
        rate_one("1", INT64_MAX)


def test_a_negative_quantity_is_refused_rather_than_billed() -> None:
    with pytest.raises(RatingOverflowError):
        rate_one("1", -1)


prices = st.integers(0, 10**12).map(from_nanos)


@settings(max_examples=500, deadline=None)
@given(price=prices, quantity=st.integers(0, INT64_MAX), scale=st.integers(0, 9))
def test_the_kernel_equals_the_oracle_or_raises_exactly_when_the_amount_does_not_fit(
    price: Decimal, quantity: int, scale: int
) -> None:
    expected = oracle.per_unit(quantity, scale, price)
    price_nanos = int(price.scaleb(9))
    fits = quantity * price_nanos + 10**scale // 2 <= INT64_MAX
    if fits:
        assert rate_one(str(price), quantity, scale) == expected
    else:
        with pytest.raises(RatingOverflowError):
            rate_one(str(price), quantity, scale)


@settings(max_examples=200, deadline=None)
@given(price=st.integers(0, 10**9).map(from_nanos), low=st.integers(0, 4 * 10**9),
       extra=st.integers(0, 4 * 10**9))  # fmt: skip
def test_more_usage_never_costs_less(price: Decimal, low: int, extra: int) -> None:
    assert rate_one(str(price), low + extra) >= rate_one(str(price), low)
