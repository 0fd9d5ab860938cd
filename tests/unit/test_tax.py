"""Tax by jurisdiction: the rule each customer is taxed by, from dated rates."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from invoicing.tax import TaxRates, TaxRatesError, rule_for, valid_vat_number
from subscriptions.model import Customer

RATES = TaxRates.load()
DAY = date(2026, 10, 31)
BASE = Customer("acme", "c", "C", tax_rate=Decimal("8.25"))


def rule(seller: str = "DE", day: date = DAY, **fields: object) -> tuple[Decimal, str]:
    found = rule_for(replace(BASE, **fields), seller, day, RATES)  # type: ignore[arg-type]
    return found.rate, found.name


def test_an_eu_business_in_another_member_state_with_a_vat_number_is_reverse_charged() -> None:
    rate, name = rule(country="FR", tax_id="FR 40 303 265 045")
    assert rate == 0 and "reverse charge" in name and "FR" in name
    # In the seller's own state, or with a number of the wrong shape, or from a seller
    # outside the EU (or one whose country is not set), VAT is charged at the place's rate.
    assert rule(country="DE", tax_id="DE123456789")[0] == Decimal(19)
    assert rule(country="FR", tax_id="FR123")[0] == Decimal(20)
    assert rule(seller="US", country="FR", tax_id="FR40303265045")[0] == Decimal(20)
    assert rule(seller="", country="FR", tax_id="FR40303265045")[0] == Decimal(20)


def test_a_consumer_pays_the_rate_of_their_country_in_force_on_the_tax_point() -> None:
    assert rule(country="FR") == (Decimal(20), "FR 20% in force on 2026-10-31")
    assert rule(country="IT")[0] == Decimal(22)
    # Germany cut VAT from 19% to 16% for the second half of 2020.
    assert rule(country="DE", day=date(2020, 6, 30))[0] == Decimal(19)
    assert rule(country="DE", day=date(2020, 7, 1))[0] == Decimal(16)
    assert rule(country="DE", day=date(2021, 1, 1))[0] == Decimal(19)
    # A region's rate where one is kept, the country's where not.
    assert rule(country="CA", region="QC")[0] == Decimal("14.975")
    assert rule(country="CA", region="AB")[0] == Decimal(5)


def test_exemption_the_customers_own_rate_and_an_unknown_country_are_named() -> None:
    assert rule(country="FR", tax_exempt=True) == (Decimal(0), "exempt: the customer is tax-exempt")
    assert rule() == (Decimal("8.25"), "8.25% kept on the customer")
    rate, name = rule(country="ZZ")
    assert rate == Decimal("8.25") and "no rate is kept for ZZ" in name


@pytest.mark.parametrize(("number", "country", "valid"), [
    ("DE123456789", "DE", True), ("123456789", "DE", True), ("DE12345678", "DE", False),
    ("NL123456789B01", "NL", True), ("EL123456789", "GR", True), ("ATU12345678", "AT", True),
    ("FR40303265045", "FR", True), ("FR4030326504", "FR", False), ("GB123456789", "GB", False),
])  # fmt: skip
def test_vat_numbers_are_checked_for_their_states_shape(
    number: str, country: str, valid: bool
) -> None:
    assert valid_vat_number(number, country) is valid


def test_a_rates_file_with_a_bad_rate_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "rates.yaml"
    bad.write_text("rates:\n  - {country: FR, rate: '120', from: 2024-01-01}\n")
    with pytest.raises(TaxRatesError, match="FR"):
        TaxRates.load(bad)
    bad.write_text("rates: [{country: FR}]\n")
    with pytest.raises(TaxRatesError, match="cannot read"):
        TaxRates.load(bad)
