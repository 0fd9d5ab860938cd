"""Loading price books: good ones load, bad ones say where and what is wrong."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book, parse_price_book
from rating.plans import PriceBookError


def book(**plan_overrides: Any) -> dict[str, Any]:
    plan = {"id": "pro", "currency": "USD",
            "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.01"}]}  # fmt: skip
    plan.update(plan_overrides)
    return {"meters": [{"id": "calls"}], "plans": [plan]}


def versions(*overrides: dict[str, Any]) -> dict[str, Any]:
    """A book whose plan 'pro' has version 1 and one more plan entry per override."""
    document = book()
    document["plans"] += [{**document["plans"][0], **override} for override in overrides]
    if overrides and "effective_from" in overrides[0] and overrides[0].get("version") == 1:
        document["plans"] = document["plans"][1:]  # the override replaces version 1
    return document


def test_the_version_in_force_is_the_latest_that_has_taken_effect() -> None:
    loaded = parse_price_book(
        versions({"version": 2, "effective_from": "2026-03-15"},
                 {"version": 3, "effective_from": "2026-06-01"}),
        "plans.yaml",
    )  # fmt: skip
    days = ("2020-01-01", "2026-03-14", "2026-03-15", "2026-05-31", "2030-01-01")
    in_force = {}
    for day in days:
        plan = loaded.plan_at("pro", date.fromisoformat(day))
        assert plan is not None
        in_force[day] = plan.version
    assert in_force == {"2020-01-01": 1, "2026-03-14": 1, "2026-03-15": 2, "2026-05-31": 2,
                        "2030-01-01": 3}  # fmt: skip
    assert loaded.plan("pro").version == 3
    assert loaded.plan_at("absent", date(2026, 1, 1)) is None


def test_no_version_is_in_force_before_the_first_one_takes_effect() -> None:
    loaded = parse_price_book(book(effective_from="2026-03-01"), "plans.yaml")
    assert loaded.plan_at("pro", date(2026, 2, 28)) is None
    assert loaded.plan_at("pro", date(2026, 3, 1)) is not None


def test_the_demo_price_book_loads() -> None:
    loaded = load_price_book(PRICE_BOOK)
    assert {plan.id for plan in loaded.plans} == {"starter", "growth", "scale"}


@pytest.mark.parametrize(
    ("case", "document", "message"),
    [
        ("an unknown currency", book(currency="XYZ"),
         "plan 'pro', currency: unknown currency 'XYZ'"),
        ("a negative price",
         book(charges=[{"meter": "calls", "model": "per_unit", "unit_price": "-1"}]),
         "plan 'pro', charge 1 (meter 'calls'), unit_price: a price cannot be negative"),
        ("a price finer than a nano-unit",
         book(charges=[{"meter": "calls", "model": "per_unit", "unit_price": "0.0000000001"}]),
         "more than 9 decimal places"),
        ("a charge on an undeclared meter",
         book(charges=[{"meter": "tokens", "model": "per_unit", "unit_price": "1"}]),
         "plan 'pro': charge on meter 'tokens', which is not declared under meters"),
        ("an unknown price model",
         book(charges=[{"meter": "calls", "model": "bogus", "unit_price": "1"}]),
         "plan 'pro', charge 1 (meter 'calls')"),
        ("a plan without charges", book(charges=[]),
         "plan 'pro': a plan needs at least one charge or fixed fee"),
        ("a fixed fee declared twice",
         book(fixed_fees=[{"id": "platform", "amount": "10"}, {"id": "platform", "amount": "5"}]),
         "plan 'pro': fixed fee 'platform' is declared twice"),
        ("a negative fixed fee", book(fixed_fees=[{"id": "platform", "amount": "-1"}]),
         "plan 'pro', fee 'platform', amount: a price cannot be negative"),
        ("a negative commitment", book(commitment="-5"),
         "plan 'pro', commitment: a price cannot be negative"),
        ("a later version without a date", versions({"version": 2}),
         "plan 'pro' version 2: needs effective_from"),
        ("versions out of date order",
         versions({"version": 1, "effective_from": "2026-05-01"},
                  {"version": 2, "effective_from": "2026-04-01"}),
         "effective_from 2026-04-01 is not after version 1's (2026-05-01)"),
        ("a gap in the version numbers", versions({"version": 3, "effective_from": "2026-05-01"}),
         "plan 'pro': versions must be numbered 1, 2, 3"),
        ("a version in another currency",
         versions({"version": 2, "effective_from": "2026-05-01", "currency": "EUR"}),
         "plan 'pro' version 2: currency EUR differs from version 1 (USD)"),
        ("a version declared twice", versions({"version": 1, "name": "again"}),
         "plan (id, version) 'pro, 1' is declared twice"),
        ("a converted package of a fraction of a converted unit",
         book(charges=[{"meter": "calls", "model": "package", "package_size": "1.5",
                        "package_price": "1", "unit_conversion": {"divide_by": 1000}}]),
         "package_size 1.5"),
        ("a conversion by zero",
         book(charges=[{"meter": "calls", "model": "per_unit", "unit_price": "1",
                        "unit_conversion": {"divide_by": 0}}]),
         "divide_by"),
        ("a conversion by more than any quantity",
         book(charges=[{"meter": "calls", "model": "per_unit", "unit_price": "1",
                        "unit_conversion": {"divide_by": 10**18 + 1}}]),
         "divide_by"),
        ("a conversion by more than any quantity at the meter's scale",
         {**book(charges=[{"meter": "calls", "model": "per_unit", "unit_price": "1",
                           "unit_conversion": {"divide_by": 10**10}}]),
          "meters": [{"id": "calls", "scale": 9}]},
         "divide_by 10000000000 is more than any quantity of the meter can hold"),
        ("a time unit on a meter that does not weigh by time",
         {**book(), "meters": [{"id": "calls", "per": "hour"}]},
         "only a weighted_sum meter weighs by time"),
        ("a weighted sum by an unknown time unit",
         {**book(), "meters": [{"id": "calls", "aggregation": "weighted_sum", "per": "week"}]},
         "per"),
        ("a percentage on a meter that does not sum amounts",
         {**book(charges=[{"meter": "calls", "model": "percentage", "rate": "1"}]),
          "meters": [{"id": "calls", "aggregation": "latest"}]},
         "aggregation: sum, not latest"),
        ("a plan discount the book does not declare",
         {**book(), "plans": [{**book()["plans"][0], "discounts": ["nope"]}]},
         "discount 'nope' is not declared under coupons"),
        ("an unknown rounding of a conversion",
         book(charges=[{"meter": "calls", "model": "per_unit", "unit_price": "1",
                        "unit_conversion": {"divide_by": 10, "rounding": "sideways"}}]),
         "rounding"),
    ],
)  # fmt: skip
def test_a_bad_price_book_is_explained(case: str, document: dict[str, Any], message: str) -> None:
    with pytest.raises(PriceBookError) as raised:
        parse_price_book(document, "plans.yaml")
    assert message in str(raised.value), case
    assert str(raised.value).startswith("plans.yaml: invalid price book"), case


def test_a_missing_file_and_bad_yaml_are_explained(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="cannot read the price book"):
        load_price_book(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("plans: [unclosed")
    with pytest.raises(PriceBookError, match="not valid YAML"):
        load_price_book(broken)


def test_a_folder_of_files_is_one_price_book(tmp_path: Path) -> None:
    (tmp_path / "a-meters.yaml").write_text("meters:\n  - id: calls\n")
    (tmp_path / "b-pro.yml").write_text(
        "plans:\n  - id: pro\n    currency: USD\n    charges:\n"
        "      - {meter: calls, model: per_unit, unit_price: '0.01'}\n"
    )
    (tmp_path / "notes.txt").write_text("not a price book")
    loaded = load_price_book(tmp_path)
    assert (loaded.meters[0].id, loaded.plan("pro").currency) == ("calls", "USD")


def test_a_bad_folder_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match=r"no \.yaml files"):
        load_price_book(tmp_path)
    (tmp_path / "odd.yaml").write_text("- just a list\n")
    with pytest.raises(PriceBookError, match=r"odd\.yaml: expected a mapping"):
        load_price_book(tmp_path)


def test_a_meter_grouping_by_the_same_property_twice_is_refused() -> None:
    document = book()
    document["meters"] = [{"id": "calls", "group_by": ["region", "region"]}]
    with pytest.raises(PriceBookError, match="group_by property 'region' is declared twice"):
        parse_price_book(document, "plans.yaml")


@pytest.mark.parametrize(
    "meter",
    [{"id": "calls", "aggregation": "unique_count"}, {"id": "calls", "unique": "user"}],
)
def test_a_unique_count_and_only_it_names_the_property_it_counts(meter: dict[str, str]) -> None:
    document = book()
    document["meters"] = [meter]
    with pytest.raises(PriceBookError, match="a unique_count meter names the property"):
        parse_price_book(document, "plans.yaml")
