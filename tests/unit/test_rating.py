"""Every price model: a shared table of named cases, then the kernel against the Decimal
oracle on random plans and quantities (zero, tier boundaries, the largest values, overflow)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rating import oracle
from rating.loading import parse_price_book
from rating.money import INT64_MAX, NANO, from_nanos, to_nanos
from rating.plans import Charge, PriceBook
from rating.rater import INTERPRETED_ROWS, RatingOverflowError, breakdown, rate
from rating.table import ChargeTable


def book_for(charge: dict[str, Any], scale: int = 0) -> PriceBook:
    return parse_price_book(
        {
            "meters": [{"id": "m", "scale": scale}],
            "plans": [{"id": "p", "currency": "USD", "charges": [{"meter": "m", **charge}]}],
        },
        "test",
    )


def _both_forms(rows: Callable[[np.ndarray, np.ndarray, bool], Any], quantity: int) -> Any:
    """``rows(charge_index, quantity, compiled)`` over one row with the interpreted kernels
    and over a batch with the compiled ones: the two must agree, in what they return for
    the row or in raising."""
    outcomes = []
    for count, compiled in ((1, False), (INTERPRETED_ROWS + 1, True)):
        try:
            charge_index = np.zeros(count, dtype=np.int64)
            outcomes.append(rows(charge_index, np.full(count, quantity), compiled))
        except RatingOverflowError as error:
            outcomes.append(error)
    interpreted, compiled = outcomes
    if isinstance(interpreted, RatingOverflowError) or isinstance(compiled, RatingOverflowError):
        assert type(interpreted) is type(compiled), (interpreted, compiled)
        raise interpreted
    return interpreted, compiled


def kernel_amount(book: PriceBook, quantity: int) -> Decimal:
    table = ChargeTable.compile(book)
    interpreted, compiled = _both_forms(lambda c, q, f: rate(table, c, q, compiled=f), quantity)
    assert int(interpreted[0]) == int(compiled[0]) == int(compiled[-1])
    return from_nanos(int(interpreted[0]))


def kernel_tiers(book: PriceBook, quantity: int) -> dict[int, tuple[int, Decimal]]:
    """The kernel's breakdown as {tier number: (units, amount)}, leaving out empty tiers."""
    table = ChargeTable.compile(book)
    interpreted, compiled = _both_forms(
        lambda c, q, f: breakdown(table, c, q, compiled=f), quantity
    )
    assert (interpreted.units[0] == compiled.units[0]).all()
    assert (interpreted.amounts[0] == compiled.amounts[0]).all()
    return {
        column + 1: (int(units), from_nanos(int(amount)))
        for column, (units, amount) in enumerate(
            zip(interpreted.units[0], interpreted.amounts[0], strict=True)
        )
        if units or amount
    }


def only_charge(book: PriceBook) -> Charge:
    return book.plans[0].charges[0]


def tiers(*spec: tuple[int | None, str, str]) -> list[dict[str, Any]]:
    return [{"up_to": up, "unit_price": price, "flat_fee": flat} for up, price, flat in spec]


GRADUATED = {"model": "graduated",
             "tiers": tiers((100, "1", "0"), (1000, "0.5", "10"), (None, "0.1", "0"))}  # fmt: skip
VOLUME = {
    "model": "volume",
    "tiers": tiers((100, "1", "0"), (1000, "0.5", "5"), (None, "0.1", "0")),
}

CASES = [
    ("per unit, zero units cost nothing", {"model": "per_unit", "unit_price": "0.25"}, 0, "0"),
    ("per unit, a million calls at 0.0004 cost 400",
     {"model": "per_unit", "unit_price": "0.0004"}, 1_000_000, "400"),
    ("graduated, zero usage reaches no tier and costs nothing", GRADUATED, 0, "0"),
    ("graduated, inside the first tier bills the first rate", GRADUATED, 40, "40"),
    ("graduated, quantity exactly on a tier boundary bills the lower tier only",
     GRADUATED, 100, "100"),
    ("graduated, one unit past a boundary adds the next rate and its flat fee",
     GRADUATED, 101, "110.5"),
    ("graduated, the open tier adds its rate to every lower tier in full",
     GRADUATED, 2000, "660"),
    ("volume, quantity exactly on a tier boundary prices all units at the lower tier",
     VOLUME, 100, "100"),
    ("volume, one unit past a boundary reprices every unit and adds the tier's flat fee",
     VOLUME, 101, "55.5"),
    ("volume, the open tier prices every unit at its rate", VOLUME, 2000, "200"),
    ("package, a started block is billed in full when rounding up",
     {"model": "package", "package_size": 1000, "package_price": "5"}, 1001, "10"),
    ("package, only completed blocks are billed when rounding down",
     {"model": "package", "package_size": 1000, "package_price": "5", "rounding": "down"},
     1999, "5"),
    ("package, zero usage costs nothing",
     {"model": "package", "package_size": 10, "package_price": "5"}, 0, "0"),
    ("per started 1,000 requests: 1,001 requests are two blocks",
     {"model": "per_unit", "unit_price": "0.5",
      "unit_conversion": {"divide_by": 1000, "rounding": "up"}}, 1001, "1"),
    ("per completed hour from seconds: 7,199 seconds are one hour",
     {"model": "per_unit", "unit_price": "2",
      "unit_conversion": {"divide_by": 3600, "rounding": "down"}}, 7199, "2"),
    ("per GB from bytes, half up: 1.5 GB bills two, just under bills one",
     {"model": "per_unit", "unit_price": "0.1",
      "unit_conversion": {"divide_by": 10**9, "rounding": "half_up"}}, 1_500_000_000, "0.2"),
    ("per GB from bytes, half up: one byte under half a GB rounds down",
     {"model": "per_unit", "unit_price": "0.1",
      "unit_conversion": {"divide_by": 10**9, "rounding": "half_up"}}, 1_499_999_999, "0.1"),
    ("a conversion before tiers: the tier bounds count converted units",
     {"model": "graduated", "unit_conversion": {"divide_by": 1000},
      "tiers": [{"up_to": 10, "unit_price": "1"}, {"unit_price": "0.5"}]}, 12_000, "11"),
    ("package with free units: usage within the free units costs nothing",
     {"model": "package", "package_size": 1000, "package_price": "5", "free_units": 100},
     100, "0"),
    ("package with free units: one unit past the free ones starts a block",
     {"model": "package", "package_size": 1000, "package_price": "5", "free_units": 100},
     101, "5"),
    ("package with free units: blocks count from the end of the free ones",
     {"model": "package", "package_size": 1000, "package_price": "5", "free_units": 100},
     1101, "10"),
    ("package with free units, rounding down: only completed blocks beyond them",
     {"model": "package", "package_size": 1000, "package_price": "5", "free_units": 100,
      "rounding": "down"}, 2099, "5"),
    ("allowance, usage within the allowance is free",
     {"model": "allowance", "included": 500, "overage_price": "0.02"}, 500, "0"),
    ("allowance, usage past the allowance pays the overage price",
     {"model": "allowance", "included": 500, "overage_price": "0.02"}, 750, "5"),
    ("allowance, tiered overage counts overage units from the allowance",
     {"model": "allowance", "included": 100,
      "overage_tiers": tiers((50, "1", "0"), (None, "0.5", "0"))}, 200, "75"),
    ("graduated at zero usage bills the first tier's flat fee when the charge says so",
     {**GRADUATED, "tiers": tiers((100, "1", "7"), (None, "0.5", "10")),
      "zero_usage": "first_tier"}, 0, "7"),
    ("volume at zero usage bills the first tier's flat fee when the charge says so",
     {**VOLUME, "tiers": tiers((100, "1", "3"), (None, "0.5", "5")), "zero_usage": "first_tier"},
     0, "3"),
    ("the first tier's flat fee at zero usage stays once usage starts",
     {**GRADUATED, "tiers": tiers((100, "1", "7"), (None, "0.5", "10")),
      "zero_usage": "first_tier"}, 1, "8"),
    ("graduated percentage: 2.9% of a volume inside the first tier, plus its flat fee",
     {"model": "graduated_percentage", "tiers": [
         {"up_to": 10000, "rate": "2.9", "flat_fee": "0.30"}, {"rate": "1.9"}]},
     5000, "145.3"),
    ("graduated percentage: each tier's part of the volume at its own rate",
     {"model": "graduated_percentage", "tiers": [
         {"up_to": 10000, "rate": "2.9"}, {"up_to": 50000, "rate": "1.9", "flat_fee": "5"},
         {"rate": "0.5"}]}, 60000, "1105"),
    ("graduated percentage at zero volume bills nothing, or the first flat fee if asked",
     {"model": "graduated_percentage", "zero_usage": "first_tier",
      "tiers": [{"up_to": 100, "rate": "1", "flat_fee": "2"}, {"rate": "0.5"}]}, 0, "2"),
    ("dynamic: the amounts the events carry, as they are",
     {"model": "dynamic"}, 1234, "1234"),
    ("dynamic with a markup: an upstream bill of 200 plus 15% is 230",
     {"model": "dynamic", "markup_percent": "15"}, 200, "230"),
    ("a minimum applies when usage rates below it",
     {"model": "per_unit", "unit_price": "0.01", "minimum": "20"}, 10, "20"),
    ("a maximum caps what usage rates above it",
     {"model": "per_unit", "unit_price": "1", "maximum": "500"}, 10_000, "500"),
    ("a maximum caps an amount too large to represent instead of failing",
     {"model": "per_unit", "unit_price": "1000", "maximum": "500"}, INT64_MAX, "500"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "charge", "quantity", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_named_cases(case: str, charge: dict[str, Any], quantity: int, expected: str) -> None:
    book = book_for(charge)
    assert kernel_amount(book, quantity) == Decimal(expected), case
    assert oracle.rate_charge(only_charge(book), quantity, 0).amount == Decimal(expected), case


@pytest.mark.parametrize(
    ("case", "price", "quantity", "scale", "expected"),
    [
        ("a scaled quantity is divided by its scale", "0.5", 1_500, 3, "0.75"),
        ("a sub-nano result rounds half up", "0.000000001", 500, 3, "0.000000001"),
        ("just under half a nano rounds down", "0.000000001", 499, 3, "0"),
        ("a product beyond 64 bits is exact when the amount fits",
         "9", 10**18, 9, "9000000000"),
    ],
)  # fmt: skip
def test_scaled_quantities(case: str, price: str, quantity: int, scale: int, expected: str) -> None:
    book = book_for({"model": "per_unit", "unit_price": price}, scale)
    assert kernel_amount(book, quantity) == Decimal(expected), case


def test_an_amount_beyond_64_bit_nano_units_raises_and_names_the_charge() -> None:
    with pytest.raises(RatingOverflowError, match="plan 'p' \\(version 1\\), meter 'm'"):
        kernel_amount(book_for({"model": "per_unit", "unit_price": "1"}), INT64_MAX)


def test_a_negative_quantity_is_refused_rather_than_billed() -> None:
    with pytest.raises(RatingOverflowError):
        kernel_amount(book_for({"model": "per_unit", "unit_price": "1"}), -1)


# Random plans. Prices reach 10^4 currency units so that large quantities overflow.
nano_prices = st.one_of(st.just(0), st.integers(0, 10**6), st.integers(0, 10**13)).map(
    lambda nanos: str(from_nanos(nanos))
)


@st.composite
def tier_lists(draw: st.DrawFn, scale: int) -> list[dict[str, Any]]:
    bounds = sorted(draw(st.sets(st.integers(1, 10**15), min_size=0, max_size=4)))
    uppers: list[int | None] = [*bounds, None]
    return [
        {"up_to": None if up is None else str(Decimal(up).scaleb(-scale)),
         "unit_price": draw(nano_prices), "flat_fee": draw(nano_prices)}
        for up in uppers
    ]  # fmt: skip


conversions = st.fixed_dictionaries(
    {
        # At most 10^9: times the scale's 10^9 it still fits in 64 bits, as the book requires.
        "divide_by": st.one_of(st.sampled_from([1, 2, 7, 1000, 3600, 10**9]),
                               st.integers(1, 10**9)),
        "rounding": st.sampled_from(["up", "down", "half_up"]),
    }
)  # fmt: skip


# Rates in percent, of at most 7 decimal places (a whole number of nano-units per unit).
percents = st.one_of(st.just(0), st.integers(0, 10**9), st.integers(0, 10**16)).map(
    lambda nanos: str(from_nanos(nanos) * 100)
)
MODELS = ["per_unit", "graduated", "volume", "package", "allowance", "graduated_percentage",
          "dynamic"]  # fmt: skip


@st.composite
def charges(draw: st.DrawFn, scale: int) -> dict[str, Any]:
    model = draw(st.sampled_from(MODELS))
    charge: dict[str, Any] = {"model": model}
    if draw(st.integers(0, 3)) == 0:  # a quarter with a unit conversion before the model
        charge["unit_conversion"] = draw(conversions)
        scale = 0  # the model's own quantities count whole converted units
    if model == "per_unit":
        charge["unit_price"] = draw(nano_prices)
    elif model in ("graduated", "volume", "graduated_percentage"):
        charge["tiers"] = draw(tier_lists(scale))
        if model == "graduated_percentage":
            for tier in charge["tiers"]:
                del tier["unit_price"]
                tier["rate"] = draw(percents)
        if draw(st.booleans()):
            charge["zero_usage"] = draw(st.sampled_from(["no_tier", "first_tier"]))
    elif model == "dynamic":
        if draw(st.booleans()):
            charge["markup_percent"] = draw(percents)
    elif model == "package":
        charge["package_size"] = str(Decimal(draw(st.integers(1, 10**12))).scaleb(-scale))
        charge["package_price"] = draw(nano_prices)
        charge["rounding"] = draw(st.sampled_from(["up", "down"]))
        if draw(st.booleans()):
            charge["free_units"] = str(Decimal(draw(st.integers(0, 10**12))).scaleb(-scale))
    else:
        charge["included"] = str(Decimal(draw(st.integers(0, 10**12))).scaleb(-scale))
        if draw(st.booleans()):
            charge["overage_price"] = draw(nano_prices)
        else:
            charge["overage_tiers"] = draw(tier_lists(scale))
    bounds = sorted(draw(st.lists(nano_prices, min_size=2, max_size=2)), key=Decimal)
    if draw(st.booleans()):
        charge["minimum"] = bounds[0]
    if draw(st.booleans()):
        charge["maximum"] = bounds[1]
    return charge


def boundaries(charge: dict[str, Any], scale: int) -> list[int]:
    """Quantities next to every boundary the charge declares, in scaled units (with a unit
    conversion: the metered quantities next to each converted boundary and to the half of
    the divisor where half up turns)."""
    conversion = charge.get("unit_conversion")
    if conversion is not None:
        by = conversion["divide_by"] * 10**scale
        model = {name: value for name, value in charge.items() if name != "unit_conversion"}
        points = set(boundaries(model, 0))
        return [max(0, min(INT64_MAX, p * by + shift + d))
                for p in points for shift in (0, by // 2) for d in (-1, 0, 1)]  # fmt: skip
    points = [0]
    for tier in charge.get("tiers", []) + charge.get("overage_tiers", []):
        if tier["up_to"] is not None:
            points.append(int(Decimal(tier["up_to"]).scaleb(scale)))
    for key in ("package_size", "included"):
        if key in charge:
            points.append(int(Decimal(charge[key]).scaleb(scale)))
    offset = int(Decimal(charge.get("included", charge.get("free_units", 0))).scaleb(scale))
    points += [offset + p for p in points]
    return [max(0, min(INT64_MAX, p + d)) for p in points for d in (-1, 0, 1)]


@settings(max_examples=1500, deadline=None)
@given(data=st.data(), scale=st.sampled_from([0, 0, 3, 9]))
def test_the_kernel_equals_the_oracle_for_random_plans_or_raises_exactly_when_it_must(
    data: st.DataObject, scale: int
) -> None:
    charge = data.draw(charges(scale))
    quantity = data.draw(
        st.one_of(
            st.sampled_from(boundaries(charge, scale)),
            st.integers(0, 10**6),
            st.integers(0, INT64_MAX),
            st.integers(INT64_MAX - 10**6, INT64_MAX),
        )
    )
    book = book_for(charge, scale)
    rated = oracle.rate_charge(only_charge(book), quantity, scale)
    if rated.amount.scaleb(9) > INT64_MAX:
        with pytest.raises(RatingOverflowError):
            kernel_amount(book, quantity)
    else:
        assert kernel_amount(book, quantity) == rated.amount
    if rated.unbounded.scaleb(9) > INT64_MAX:
        with pytest.raises(RatingOverflowError):
            kernel_tiers(book, quantity)
        return
    with localcontext(prec=80):
        expected_tiers = {
            part.tier: (
                int(
                    part.units.scaleb(
                        0 if charge["model"] == "package" or "unit_conversion" in charge else scale
                    )
                ),
                part.amount.quantize(NANO, rounding=ROUND_HALF_UP),
            )
            for part in rated.parts
        }
    assert kernel_tiers(book, quantity) == {
        tier: units_amount for tier, units_amount in expected_tiers.items() if any(units_amount)
    }


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_more_usage_never_costs_less_except_under_volume_pricing(data: st.DataObject) -> None:
    charge = data.draw(charges(0))
    assume(charge["model"] != "volume")
    low = data.draw(st.integers(0, 10**12))
    high = low + data.draw(st.integers(0, 10**12))
    charge_def = only_charge(book_for(charge))
    cheaper = oracle.rate_charge(charge_def, low, 0).amount
    dearer = oracle.rate_charge(charge_def, high, 0).amount
    assert dearer >= cheaper
    if dearer.scaleb(9) <= INT64_MAX:
        book = book_for(charge)
        assert kernel_amount(book, high) >= kernel_amount(book, low)


def test_prices_round_trip_as_nano_units() -> None:
    assert to_nanos(Decimal("0.000000001")) == 1


@settings(max_examples=600, deadline=None)
@given(data=st.data(), scale=st.sampled_from([0, 3, 9]))
def test_the_quantity_limit_is_exactly_where_rating_starts_to_overflow(
    data: st.DataObject, scale: int
) -> None:
    """A total may grow to max_quantity and no further: there the amount still fits, one
    unit more it does not (unless the limit is the largest 64-bit quantity itself)."""
    book = book_for(data.draw(charges(scale)), scale)
    limit = ChargeTable.compile(book).refs[0].max_quantity
    below = data.draw(st.integers(0, limit))
    kernel_amount(book, below)
    kernel_amount(book, limit)
    if limit < INT64_MAX:
        with pytest.raises(RatingOverflowError):
            kernel_amount(book, limit + 1)
