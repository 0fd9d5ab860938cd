"""Loading price books: good ones load, bad ones say where and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meterline.demo import PRICE_BOOK
from rating.plans import PriceBookError, load_price_book, parse_price_book


def book(**plan_overrides: Any) -> dict[str, Any]:
    plan = {"id": "pro", "currency": "USD",
            "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.01"}]}  # fmt: skip
    plan.update(plan_overrides)
    return {"meters": [{"id": "calls"}], "plans": [plan]}


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
        ("a plan without charges", book(charges=[]), "plan 'pro', charges"),
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
