"""Tax by jurisdiction: which rate an invoice is taxed at, and the rule that says why.

Rates are dated data (``data/tax_rates.yaml``, or a file of your own), not code: a rate
holds from its day until the next one of the same country (and region) takes over. The
rules, first that applies:

1. a customer marked exempt pays no tax;
2. a business customer in another EU member state than the seller, with a VAT number of
   valid format for that state, is reverse-charged: no VAT on the invoice, the customer
   accounts for it (Article 196 of the VAT Directive);
3. a customer with a country pays that country's rate (its region's, where one is kept),
   in force on the invoice's tax point: the last day of the period it bills;
4. a customer without a country pays the rate kept on the customer (meterline's first
   rule, which imports still set).

The invoice is taxed at one rate (its lines are one supply to one customer at one tax
point) and each line names the rule. A finalized invoice keeps the rate it had: it is
never recomputed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from base.settings import Settings
from subscriptions.model import Customer

# The shape of each member state's VAT number, after its two-letter prefix (the European
# Commission's VIES formats). A number of the right shape is taken as given; checking that
# it is registered needs VIES, which a billing run must not wait on.
_VAT_FORMATS = {
    "AT": r"U\d{8}", "BE": r"[01]\d{9}", "BG": r"\d{9,10}", "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}", "DE": r"\d{9}", "DK": r"\d{8}", "EE": r"\d{9}", "EL": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]", "FI": r"\d{8}", "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "HR": r"\d{11}", "HU": r"\d{8}", "IE": r"\d{7}[A-W][A-I]?|\d[A-Z+*]\d{5}[A-W]",
    "IT": r"\d{11}", "LT": r"\d{9}|\d{12}", "LU": r"\d{8}", "LV": r"\d{11}", "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}", "PL": r"\d{10}", "PT": r"\d{9}", "RO": r"\d{2,10}",
    "SE": r"\d{12}", "SI": r"\d{8}", "SK": r"\d{10}",
}  # fmt: skip
_VAT_PREFIX = {"GR": "EL"}  # Greece's numbers start with EL


class TaxRatesError(ValueError):
    """The rates file cannot be read; the message says where and why."""


@dataclass(frozen=True)
class TaxRule:
    rate: Decimal  # percent
    name: str  # what an invoice line says of it


@dataclass(frozen=True)
class _Rate:
    country: str
    region: str
    rate: Decimal
    since: date


@dataclass(frozen=True)
class TaxRates:
    rates: tuple[_Rate, ...]
    eu_members: frozenset[str]

    @classmethod
    def load(cls, path: Path | None = None) -> TaxRates:
        """The rates of ``path``, or the ones meterline ships."""
        where = str(path) if path is not None else "the built-in rates"
        try:
            shipped = resources.files("invoicing").joinpath("data/tax_rates.yaml")
            text = path.read_text() if path is not None else shipped.read_text()
            data: Any = yaml.safe_load(text)
            rates = tuple(
                _Rate(str(r["country"]).upper(), str(r.get("region", "")).upper(),
                      Decimal(str(r["rate"])), r["from"])
                for r in data["rates"]
            )  # fmt: skip
            members = frozenset(str(c).upper() for c in data.get("eu_members", []))
        except (OSError, yaml.YAMLError, KeyError, TypeError, ArithmeticError) as error:
            raise TaxRatesError(f"cannot read {where}: {error}") from None
        for rate in rates:
            if not isinstance(rate.since, date) or not 0 <= rate.rate <= 100:
                raise TaxRatesError(f"{where}: {rate.country} {rate.region}: a rate is 0 to "
                                    "100 from a day (YYYY-MM-DD)")  # fmt: skip
        return cls(rates, members)

    def rate_of(self, country: str, region: str, day: date) -> Decimal | None:
        """The rate in force in ``country`` (its ``region``'s, if one is kept) on ``day``."""
        for place in ((country, region), (country, "")) if region else ((country, ""),):
            found = [r for r in self.rates if (r.country, r.region) == place and r.since <= day]
            if found:
                return max(found, key=lambda r: r.since).rate
        return None


def valid_vat_number(number: str, country: str) -> bool:
    """Whether ``number`` has the shape of a VAT number of EU member state ``country``
    (spaces, dots and dashes aside; its prefix may be left out)."""
    prefix = _VAT_PREFIX.get(country, country)
    shape = _VAT_FORMATS.get(prefix)
    if shape is None:
        return False
    plain = re.sub(r"[\s.\-]", "", number.upper()).removeprefix(prefix)
    return re.fullmatch(shape, plain) is not None


def rule_for(customer: Customer | None, seller_country: str, day: date, rates: TaxRates) -> (
    TaxRule
):  # fmt: skip
    """The rule an invoice for ``customer`` with tax point ``day`` is taxed by."""
    if customer is None:
        return TaxRule(Decimal(0), "no tax: the customer is not registered")
    if customer.tax_exempt:
        return TaxRule(Decimal(0), "exempt: the customer is tax-exempt")
    country, seller = customer.country.upper(), seller_country.upper()
    if not country:
        return TaxRule(customer.tax_rate, f"{_percent(customer.tax_rate)} kept on the customer")
    members = rates.eu_members
    if (seller in members and country in members and country != seller
            and customer.tax_id and valid_vat_number(customer.tax_id, country)):  # fmt: skip
        return TaxRule(Decimal(0), f"reverse charge: EU business customer in {country}, VAT "
                                   f"number {customer.tax_id}; VAT due by the customer "
                                   "(Article 196, Directive 2006/112/EC)")  # fmt: skip
    rate = rates.rate_of(country, customer.region.upper(), day)
    if rate is None:
        return TaxRule(customer.tax_rate, f"{_percent(customer.tax_rate)} kept on the customer "
                                          f"(no rate is kept for {country} on {day})")  # fmt: skip
    place = f"{country}-{customer.region.upper()}" if customer.region else country
    return TaxRule(rate, f"{place} {_percent(rate)} in force on {day}")


def _percent(rate: Decimal) -> str:
    text = format(rate.normalize(), "f") if rate else "0"
    return f"{text}%"


@dataclass(frozen=True)
class TaxPolicy:
    """The rates, and where the seller is (``settings.seller_country``): what the EU's
    reverse charge depends on; without it, no invoice is reverse-charged."""

    rates: TaxRates
    seller_country: str = ""

    def rule(self, customer: Customer | None, day: date) -> TaxRule:
        return rule_for(customer, self.seller_country, day, self.rates)


_BUILT_IN: list[TaxPolicy] = []


def built_in() -> TaxPolicy:
    """The rates meterline ships, with no seller country: read once."""
    if not _BUILT_IN:
        _BUILT_IN.append(TaxPolicy(TaxRates.load()))
    return _BUILT_IN[0]


def policy_of(settings: Settings) -> TaxPolicy:
    """The tax policy settings give: their rates file (or the built-in rates) and where
    the seller is."""
    rates = TaxRates.load(settings.tax_rates) if settings.tax_rates else built_in().rates
    return TaxPolicy(rates, settings.seller_country)
