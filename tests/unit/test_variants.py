"""Price revisions by a percentage: one name per revision, compounding, every price field
revised, and the kernel on a revised plan against the Decimal oracle on prices revised by
hand."""

from __future__ import annotations

import re
import typing
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from meterline.demo import PRICE_BOOK
from rating import oracle, plans
from rating.loading import load_price_book, parse_price_book
from rating.money import NANO, from_nanos
from rating.plans import PriceBookError
from rating.rater import rate
from rating.table import ChargeTable
from rating.variants import (
    PRICE_FIELDS,
    Variant,
    VariantError,
    check_percent,
    parse,
    revised_id,
    with_add_on,
    without_add_on,
)
from tests.unit.test_rating import book_for, charges

BOOK = load_price_book(PRICE_BOOK)


def test_a_revision_has_one_name_and_revisions_compound() -> None:
    assert revised_id("growth", Decimal(5)) == "growth@+5%"
    assert revised_id("growth", Decimal("-2.50")) == "growth@-2.5%"
    assert revised_id("growth@+5%", Decimal(3)) == "growth@+8.15%"
    assert revised_id("growth@+25%", Decimal(-20)) == "growth"  # back to the list price
    assert parse("growth@+8.15%") == Variant("growth", (), Decimal("8.15"))
    assert parse("growth") == Variant("growth")
    assert BOOK.knows("growth@+5%") and not BOOK.knows("growth@+5.0%")
    assert not BOOK.knows("platinum@+5%") and not BOOK.knows("growth@5%")
    with pytest.raises(VariantError, match="written like"):
        parse("growth@5%")


def test_add_ons_are_named_in_order_once_each_and_keep_a_revision() -> None:
    both = with_add_on(with_add_on("growth@+5%", "storage"), "premium_support")
    assert both == "growth+premium_support+storage@+5%"
    assert parse(both) == Variant("growth", ("premium_support", "storage"), Decimal(5))
    assert without_add_on(both, "storage") == "growth+premium_support@+5%"
    assert BOOK.knows(both) and not BOOK.knows("growth+storage+premium_support@+5%")
    with pytest.raises(VariantError, match="already"):
        with_add_on(both, "storage")
    with pytest.raises(VariantError, match="no add-on"):
        without_add_on("growth", "storage")
    with pytest.raises(VariantError, match="named once"):
        parse("growth+storage+storage")


def test_a_kept_version_stays_in_force_whatever_the_day() -> None:
    assert parse("growth#1+storage@+5%") == Variant("growth", ("storage",), Decimal(5), 1)
    assert revised_id("growth#1", Decimal(5)) == "growth#1@+5%"
    assert with_add_on("growth#1@+5%", "storage") == "growth#1+storage@+5%"
    (kept,) = BOOK.versions_of("growth#1")
    assert (kept.id, kept.version, kept.effective_from) == ("growth#1", 1, None)
    later = BOOK.plan("growth", 2).effective_from
    assert later is not None
    assert BOOK.plan_at("growth#1", later).version == 1  # type: ignore[union-attr]
    assert BOOK.plan_at("growth", later).version == 2  # type: ignore[union-attr]
    assert BOOK.plan_at("growth#2", date(2020, 1, 1)).version == 2  # type: ignore[union-attr]


def test_an_add_on_adds_its_charges_and_fees_to_every_version_of_the_plan() -> None:
    versions = BOOK.versions_of("growth+premium_support+storage")
    assert [p.version for p in versions] == [1, 2]
    for plan, listed in zip(versions, BOOK.versions_of("growth"), strict=True):
        assert plan.charges == (*listed.charges, *BOOK.add_on("storage").charges)
        assert plan.fixed_fees == (*listed.fixed_fees, *BOOK.add_on("premium_support").fixed_fees)
        assert plan.effective_from == listed.effective_from
    revised = BOOK.plan("growth+premium_support@+10%", 1)
    assert [fee.amount for fee in revised.fixed_fees] == [Decimal("31.9"), Decimal("53.9")]


@pytest.mark.parametrize(
    ("plan_id", "problem"),
    [
        ("scale+premium_support", "priced in USD, plan 'scale' in EUR"),
        ("growth+platinum", "add-on 'platinum' is not in the price book"),
        ("growth+storage+storage", "named once"),
        ("growth@+5.0%", "is written 'growth@+5%'"),
        ("growth#3", "plan 'growth' has no version 3 (1, 2)"),
        ("growth#0", "a kept version is written like growth#1"),
        ("growth#01", "is written 'growth#1'"),
    ],
)
def test_a_variant_the_book_cannot_make_says_why(plan_id: str, problem: str) -> None:
    with pytest.raises(PriceBookError, match=re.escape(problem)):
        BOOK.variant_versions(plan_id)
    assert not BOOK.knows(plan_id)


def test_an_add_on_may_not_price_what_its_plan_prices() -> None:
    book = parse_price_book(
        {"meters": [{"id": "m"}],
         "plans": [{"id": "p", "currency": "USD", "charges": [
             {"meter": "m", "model": "per_unit", "unit_price": "1"}]}],
         "add_ons": [{"id": "twice", "currency": "USD", "charges": [
             {"meter": "m", "model": "per_unit", "unit_price": "2"}]}]},
        "test",
    )  # fmt: skip
    with pytest.raises(PriceBookError, match="both price m"):
        book.variant_versions("p+twice")


@pytest.mark.parametrize("percent", ["0", "-100", "-150", "1000.0001", "1.00001", "NaN"])
def test_a_revision_outside_its_bounds_is_refused(percent: str) -> None:
    with pytest.raises(VariantError):
        check_percent(Decimal(percent))


def _names_a_price(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        _, *metadata = typing.get_args(annotation)
        if any(getattr(item, "func", None) is plans._nano_price for item in metadata):
            return True
    return any(_names_a_price(arg) for arg in typing.get_args(annotation))


def test_every_price_field_of_the_price_book_is_revised() -> None:
    """A price field added to a model later must join PRICE_FIELDS, or revisions would
    leave it at the list price."""
    # A coupon is not part of a plan (a plan names its discounts): a revision leaves it.
    models = [value for value in vars(plans).values()
              if isinstance(value, type) and issubclass(value, BaseModel)
              and value is not plans.Coupon]  # fmt: skip
    prices, others = set(), set()
    for model in models:
        for name, field in model.model_fields.items():
            metadata = [getattr(item, "func", None) for item in field.metadata]
            is_price = plans._nano_price in metadata or _names_a_price(field.annotation)
            (prices if is_price else others).add(name)
    assert prices == PRICE_FIELDS
    assert not prices & others


def test_a_revised_plan_follows_the_list_plan_versions_with_each_price_revised() -> None:
    revised = BOOK.versions_of("growth@+7.5%")
    assert [(p.id, p.version, p.effective_from) for p in revised] == [
        ("growth@+7.5%", 1, None), ("growth@+7.5%", 2, BOOK.plan("growth", 2).effective_from)
    ]  # fmt: skip
    first = revised[0]
    assert first.fixed_fees[0].amount == Decimal("31.175")
    tiers = first.charges[0].tiers  # type: ignore[union-attr]
    assert [(t.up_to, t.unit_price, t.flat_fee) for t in tiers] == [
        (1000, Decimal("0.0005375"), 0), (10000, Decimal("0.0003225"), Decimal("0.5375")),
        (None, Decimal("0.000215"), 0),
    ]  # fmt: skip
    # Rounded half up to the nano-unit, once per price: 0.0015999996 and 1.5 nanos.
    assert BOOK.plan("scale@+33.3333%").charges[1].unit_price == Decimal("0.0016")  # type: ignore[union-attr]
    nano = book_for({"model": "per_unit", "unit_price": "0.000000001"})
    assert nano.plan("p@+50%").charges[0].unit_price == Decimal("0.000000002")  # type: ignore[union-attr]


def test_a_revision_whose_prices_no_longer_fit_64_bit_nano_units_is_refused() -> None:
    book = book_for({"model": "per_unit", "unit_price": "9000000000"})
    with pytest.raises(PriceBookError, match="as p@\\+1000%"):
        book.variant_versions("p@+1000%")


def _by_hand(charge: dict[str, Any], factor: Decimal) -> dict[str, Any]:
    """The charge's prices times ``factor``, rounded half up to the nano-unit: written out
    per field, apart from the code under test."""

    def price(value: str | None) -> str | None:
        if value is None:
            return None
        return str((Decimal(value) * factor).quantize(NANO, rounding=ROUND_HALF_UP))

    def rate(value: str) -> str:  # a percent, to the 7 places the book keeps
        return str((Decimal(value) * factor).quantize(Decimal("1E-7"), rounding=ROUND_HALF_UP))

    revised = dict(charge)
    for name in ("unit_price", "package_price", "overage_price", "minimum", "maximum"):
        if name in charge:
            revised[name] = price(charge[name])
    if charge["model"] == "dynamic":  # the multiplier of the cost is what is revised
        multiplier = (100 + Decimal(charge.get("markup_percent", 0))) * factor - 100
        revised["markup_percent"] = str(
            multiplier.quantize(Decimal("1E-7"), rounding=ROUND_HALF_UP)
        )
    for name in ("tiers", "overage_tiers"):
        if charge.get(name):
            revised[name] = [
                {
                    **tier,
                    **({"rate": rate(tier["rate"])} if "rate" in tier
                       else {"unit_price": price(tier["unit_price"])}),
                    "flat_fee": price(tier["flat_fee"]),
                }
                for tier in charge[name]
            ]  # fmt: skip
    return revised


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    scale=st.sampled_from([0, 3]),
    percent=st.decimals(min_value=Decimal("-99.9999"), max_value=1000, places=4).filter(bool),
)
def test_the_kernel_on_a_revised_plan_equals_the_oracle_on_prices_revised_by_hand(
    data: st.DataObject, scale: int, percent: Decimal
) -> None:
    charge = data.draw(charges(scale))
    book = book_for(charge, scale)
    plan_id = revised_id("p", percent)
    try:
        expected_book = book_for(_by_hand(charge, 1 + percent / 100), scale)
    except PriceBookError:  # a revised price beyond 64-bit nano-units
        with pytest.raises(PriceBookError):
            book.variant_versions(plan_id)
        return
    table = ChargeTable.compile(book)
    row = table.charge_of(plan_id, 1, "m")
    assert row is not None and table.charge_of("p", 1, "m") == 0  # the list plan kept its row
    quantity = data.draw(st.integers(0, table.refs[row].max_quantity))
    amount = from_nanos(int(rate(table, np.array([row]), np.array([quantity]))[0]))
    expected = expected_book.plans[0].charges[0]
    assert amount == oracle.rate_charge(expected, quantity, scale).amount


@pytest.mark.parametrize("percent", [5, 12, -30])
def test_every_amount_scales_with_the_revision_when_no_price_needs_rounding(percent: int) -> None:
    """Every model is linear in its prices: tier by tier, the revised plan bills the list
    amount times the factor."""
    factor = 1 + Decimal(percent) / 100
    for plan in BOOK.plans:
        revised = BOOK.plan(revised_id(plan.id, Decimal(percent)), plan.version)
        for fee, list_fee in zip(revised.fixed_fees, plan.fixed_fees, strict=True):
            assert fee.amount == list_fee.amount * factor
        for charge, list_charge in zip(revised.charges, plan.charges, strict=True):
            scale = BOOK.meter(charge.meter).scale
            for quantity in (0, 1, 999, 1000, 1001, 250_001, 10**9):
                parts = oracle.rate_charge(charge, quantity, scale).parts
                list_parts = oracle.rate_charge(list_charge, quantity, scale).parts
                assert [p.amount for p in parts] == [p.amount * factor for p in list_parts]


def test_a_price_book_without_revisions_reads_as_before() -> None:
    book = parse_price_book(
        {"meters": [{"id": "m"}],
         "plans": [{"id": "p", "currency": "USD", "charges": [
             {"meter": "m", "model": "per_unit", "unit_price": "1"}]}]},
        "test",
    )  # fmt: skip
    assert book.versions_of("p") == list(book.plans) and book.versions_of("q") == []
