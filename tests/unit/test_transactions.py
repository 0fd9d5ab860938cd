"""The percentage model, transaction by transaction: named cases written from the peers'
documented examples, then the integer rule the worker accrues against the Decimal oracle
on random charges and sequences of transactions (zero, boundaries, huge amounts)."""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating import oracle
from rating.money import INT64_MAX, from_nanos
from rating.plans import Percentage
from rating.quote import quote
from rating.transactions import TransactionFees
from tests.unit.test_rating import book_for, only_charge


def charge(**fields: Any) -> Percentage:
    found = only_charge(book_for({"model": "percentage", **fields}, scale=2))
    assert isinstance(found, Percentage)
    return found


def fees(rule: Percentage, amounts: list[str]) -> list[Decimal]:
    """Each transaction's fee as the worker accrues it, checked against the oracle."""
    scaled = [int(Decimal(a).scaleb(2)) for a in amounts]
    fees_kept = TransactionFees.of(rule, 2)
    accrued, volume = [], 0
    for counted, amount in enumerate(scaled):
        accrued.append(fees_kept.fee(counted, volume, amount))
        volume += amount
    expected = oracle.transaction_fees(rule, scaled, 2)
    with localcontext(prec=80):  # a fee may pass 64 bits here: compared in whole nano-units
        assert accrued == [int(fee.scaleb(9)) for fee in expected]
    return expected


CARD = {"rate": "2.9", "fixed_fee": "0.30", "per_transaction_minimum": "0.50"}

CASES = [
    ("a card fee: 2.9% of 100.00 plus 0.30", CARD, ["100"], ["3.2"]),
    ("a small card payment pays the per-transaction minimum", CARD, ["5"], ["0.5"]),
    ("the minimum applies to each transaction, not to the period",
     CARD, ["5", "100", "5"], ["0.5", "3.2", "0.5"]),
    ("a maximum per transaction caps a large one",
     {"rate": "1", "per_transaction_maximum": "20"}, ["10000", "100"], ["20", "1"]),
    ("a zero-amount transaction still pays the fixed fee", CARD, ["0"], ["0.5"]),
    ("the first three transactions are free, of the rate and of the fixed fee",
     {**CARD, "free_events": 3}, ["100", "100", "100", "100"], ["0", "0", "0", "3.2"]),
    ("the first 500.00 of volume are free; the transaction crossing it pays on its part "
     "beyond, and the fixed fee",
     {"rate": "2", "fixed_fee": "0.10", "free_units": "500"},
     ["300", "150", "100", "50"], ["0", "0", "1.1", "1.1"]),
    ("a transaction ending exactly on the free volume is free",
     {"rate": "2", "fixed_fee": "0.10", "free_units": "500"}, ["500", "1"], ["0", "0.12"]),
    ("three transactions or 500.00, whichever runs out first: the count runs out",
     {"rate": "1", "free_events": 3, "free_units": "500"},
     ["10", "10", "10", "10"], ["0", "0", "0", "0.1"]),
    ("three transactions or 500.00, whichever runs out first: the volume runs out",
     {"rate": "1", "free_events": 3, "free_units": "500"}, ["400", "200", "10"],
     ["0", "1", "0.1"]),
    ("a fee finer than a nano-unit rounds half up, per transaction",
     {"rate": "0.0000001"}, ["0.50", "0.49"], ["0.000000001", "0"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "fields", "amounts", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_named_cases(
    case: str, fields: dict[str, Any], amounts: list[str], expected: list[str]
) -> None:
    assert fees(charge(**fields), amounts) == [Decimal(e) for e in expected], case


def test_the_period_amount_is_the_fees_bounded_by_the_charge() -> None:
    rule = charge(**CARD, minimum="10", maximum="12")
    assert oracle.accrued_amount(rule, fees(rule, ["100"])) == Decimal(10)
    assert oracle.accrued_amount(rule, fees(rule, ["100"] * 5)) == Decimal(12)


@pytest.mark.parametrize("free", [{}, {"free_events": 3}, {"free_units": "1000"},
                                  {"free_events": 1, "free_units": "50"}])  # fmt: skip
def test_a_quote_prices_one_transaction_beyond_the_free_ones(free: dict[str, Any]) -> None:
    book = book_for({"model": "percentage", **CARD, **free}, scale=2)
    priced = quote(book, "p", "m", "100")
    assert (priced.amount, [p.units for p in priced.parts]) == (Decimal("3.2"), [1])
    assert quote(book, "p", "m", "5").amount == Decimal("0.5")  # the minimum


@pytest.mark.parametrize(
    ("fields", "problem"),
    [({"rate": "2.9", "per_transaction_minimum": "1", "per_transaction_maximum": "0.5"},
      "above per_transaction_maximum"),
     ({"rate": "2.9", "unit_conversion": {"divide_by": 100}}, "no unit_conversion"),
     ({"rate": "0.00000001"}, "more than 7 decimal places"),
     ({"rate": "2.9", "free_units": "0.001"}, "decimal places")],
)  # fmt: skip
def test_a_percentage_the_book_cannot_price_exactly_is_refused(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        charge(**fields)


def test_a_percentage_needs_a_meter_that_sums_amounts() -> None:
    from rating.loading import parse_price_book  # noqa: PLC0415

    with pytest.raises(ValueError, match="aggregation: sum, not max"):
        parse_price_book(
            {"meters": [{"id": "m", "aggregation": "max"}],
             "plans": [{"id": "p", "currency": "USD",
                        "charges": [{"meter": "m", "model": "percentage", "rate": "1"}]}]},
            "test",
        )  # fmt: skip


nanos = st.one_of(st.just(0), st.integers(0, 10**9), st.integers(0, 10**15))
rates = st.one_of(st.just(0), st.integers(0, 10**9), st.integers(0, 10**16)).map(
    lambda n: from_nanos(n) * 100
)


@st.composite
def percentage_charges(draw: st.DrawFn) -> Percentage:
    low, high = sorted(draw(st.lists(nanos, min_size=2, max_size=2)))
    free_units = draw(st.one_of(st.none(), st.integers(0, 10**6), st.integers(0, 10**15)))
    return charge(
        rate=str(draw(rates)),
        fixed_fee=str(from_nanos(draw(nanos))),
        free_events=draw(st.one_of(st.none(), st.integers(0, 5))),
        free_units=None if free_units is None else str(Decimal(free_units).scaleb(-2)),
        per_transaction_minimum=draw(st.one_of(st.none(), st.just(str(from_nanos(low))))),
        per_transaction_maximum=draw(st.one_of(st.none(), st.just(str(from_nanos(high))))),
    )


@settings(max_examples=600, deadline=None)
@given(
    rule=percentage_charges(),
    amounts=st.lists(
        st.one_of(st.integers(0, 10**4), st.integers(0, 10**12), st.just(INT64_MAX)),
        max_size=12,
    ),
)
def test_the_accrued_rule_equals_the_oracle_for_random_charges(
    rule: Percentage, amounts: list[int]
) -> None:
    fees(rule, [str(Decimal(a).scaleb(-2)) for a in amounts])
