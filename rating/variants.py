"""A subscription's own variant of a plan: one version of it kept (a contract that stays
on last year's prices), add-ons it has taken from a day on (a support fee, a charge on a
meter the plan does not price) and a revision of every price by a percentage (a
contract's yearly uplift, a negotiated discount). A variant is named
``<plan>[#<version>][+<add-on>...][@<+|-><percent>%]``: "growth#1+premium_support@+5%".

A variant is an ordinary plan to everything downstream: the worker rates it with the same
kernels, totals under it are kept apart from the list plan's, and fees and commitments
are prorated by day to it. Unless it keeps a version, it follows the list plan's
versions: "growth@+5%" on a day is the version of "growth" in force that day, revised.

A revision multiplies every price by (1 + percent/100), rounded half up to the nano-unit,
once per price. Every pricing model is linear in its prices, so revising the prices
revises every amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# None is allowed in an id, so a variant never collides with one.
PIN, ADD, REVISE = "#", "+", "@"
MAX_PLACES = 4
MAX_PERCENT = Decimal(1000)  # an uplift beyond 11x the list price is a typo, not a contract
_NANO = Decimal("1e-9")

# Every field of a plan that holds an amount of money; test_variants checks this against
# the price book's models, so a price field added later cannot be left unrevised.
PRICE_FIELDS = frozenset(
    {"unit_price", "flat_fee", "package_price", "overage_price", "minimum", "maximum",
     "amount", "commitment", "fixed_fee", "per_transaction_minimum",
     "per_transaction_maximum"}
)  # fmt: skip
# Rates in percent, kept to the 7 decimal places the book allows: a percentage's rate is
# revised like a price; a markup so that what it multiplies the cost by is.
_RATE_PLACES = Decimal("1E-7")


class VariantError(ValueError):
    """The variant cannot be made or read; the message says why."""


@dataclass(frozen=True)
class Variant:
    base: str  # the list plan
    add_ons: tuple[str, ...] = ()  # in name order
    percent: Decimal = Decimal(0)  # the revision, 0 for none
    version: int | None = None  # the version kept whatever the day; None: the one in force

    @property
    def id(self) -> str:
        """The one name of this variant: add-ons sorted, the percent normalized."""
        kept = f"{PIN}{self.version}" if self.version is not None else ""
        added = "".join(ADD + add_on for add_on in sorted(self.add_ons))
        revised = f"{REVISE}{self.percent.normalize():+f}%" if self.percent else ""
        return self.base + kept + added + revised


def parse(plan_id: str) -> Variant:
    plan, mark, revision = plan_id.partition(REVISE)
    percent = Decimal(0)
    if mark:
        try:
            if revision[:1] not in "+-" or not revision.endswith("%"):
                raise InvalidOperation
            percent = Decimal(revision[:-1])
        except InvalidOperation:
            raise VariantError(
                f"{plan_id!r}: a revision is written like growth@+5% or growth@-2.5%"
            ) from None
    pinned, *add_ons = plan.split(ADD)
    if len(set(add_ons)) != len(add_ons) or not all(add_ons):
        raise VariantError(f"{plan_id!r}: each add-on is named once, like growth+support")
    base, mark, number = pinned.partition(PIN)
    if mark and not (number.isdigit() and int(number) >= 1):
        raise VariantError(f"{plan_id!r}: a kept version is written like growth#1")
    return Variant(base, tuple(add_ons), percent, int(number) if mark else None)


def check_percent(percent: Decimal) -> Decimal:
    if not percent.is_finite() or not -100 < percent <= MAX_PERCENT:
        raise VariantError(f"a revision is above -100% and at most +{MAX_PERCENT}%; got {percent}")
    if percent != percent.quantize(Decimal(1).scaleb(-MAX_PLACES)):
        raise VariantError(f"a revision has at most {MAX_PLACES} decimal places; got {percent}")
    if percent == 0:
        raise VariantError("a revision of 0% changes no price")
    return percent


def revised_id(plan_id: str, percent: Decimal) -> str:
    """``plan_id`` revised by ``percent`` on top of any earlier revision: two revisions
    compound into one, so prices are rounded once."""
    variant = parse(plan_id)
    combined = (100 + variant.percent) * (100 + percent) / 100 - 100
    return replace(variant, percent=combined).id


def with_add_on(plan_id: str, add_on: str) -> str:
    variant = parse(plan_id)
    if add_on in variant.add_ons:
        raise VariantError(f"{plan_id} has the add-on {add_on} already")
    return replace(variant, add_ons=(*variant.add_ons, add_on)).id


def without_add_on(plan_id: str, add_on: str) -> str:
    variant = parse(plan_id)
    if add_on not in variant.add_ons:
        raise VariantError(f"{plan_id} has no add-on {add_on} to remove")
    kept = tuple(name for name in variant.add_ons if name != add_on)
    return replace(variant, add_ons=kept).id


def composed(
    label: str,
    currency: str,
    plan: dict[str, Any],
    add_ons: Sequence[tuple[str, str, dict[str, Any]]],
    percent: Decimal | None,
) -> dict[str, Any]:
    """A variant's plan, as data for the plan model to check: ``plan`` (a dump of the plan
    named ``label``, priced in ``currency``) with the charges and fees of each add-on
    (label, currency, dump) added, then every price revised by ``percent``. An add-on in
    another currency, or one that prices what the plan prices already, is refused."""
    data = {**plan, "charges": list(plan["charges"]), "fixed_fees": list(plan["fixed_fees"]),
            "entitlements": list(plan["entitlements"])}  # fmt: skip
    for add_on_label, add_on_currency, added in add_ons:
        if add_on_currency != currency:
            raise VariantError(f"{add_on_label} is priced in {add_on_currency}, {label} in "
                               f"{currency}")  # fmt: skip
        clash = {c["meter"] for c in data["charges"]} & {c["meter"] for c in added["charges"]}
        clash |= {f["id"] for f in data["fixed_fees"]} & {f["id"] for f in added["fixed_fees"]}
        if clash:
            raise VariantError(f"{add_on_label} and {label} both price {', '.join(sorted(clash))}")
        data["charges"] += added["charges"]
        data["fixed_fees"] += added["fixed_fees"]
        data["entitlements"] = merged_entitlements(data["entitlements"], added["entitlements"])
    return revised_prices(data, percent) if percent else data


def merged_entitlements(
    given: list[dict[str, Any]], added: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A plan's entitlements (as data) with those an add-on or a subscription's grant
    adds: more of a metered feature the plan gives raises its limit (a hard limit stays
    hard), any other feature added is its own."""
    by_feature = {entitlement["feature"]: entitlement for entitlement in given}
    for entitlement in added:
        known = by_feature.get(entitlement["feature"])
        if known is not None and known.get("kind") == entitlement.get("kind") == "metered":
            if known.get("meter") != entitlement.get("meter"):
                raise VariantError(
                    f"entitlement {entitlement['feature']!r} counts meter {known.get('meter')!r}, "
                    f"the addition's {entitlement.get('meter')!r}"
                )
            more = Decimal(str(known["limit"])) + Decimal(str(entitlement["limit"]))
            raised = {**known, "limit": more}
            if "hard" in (known.get("enforcement"), entitlement.get("enforcement")):
                raised["enforcement"] = "hard"
            by_feature[entitlement["feature"]] = raised
        else:
            by_feature[entitlement["feature"]] = entitlement
    return list(by_feature.values())


def revised_prices(plan: dict[str, Any], percent: Decimal) -> dict[str, Any]:
    """A plan's fields (``model_dump``) with every price revised by ``percent``."""
    revised: dict[str, Any] = _revise(plan, 1 + percent / 100)
    return revised


def _revise(value: Any, factor: Decimal) -> Any:
    if isinstance(value, dict):
        return {name: _revised(name, field, factor) for name, field in value.items()}
    if isinstance(value, list | tuple):
        return [_revise(item, factor) for item in value]
    return value


def _revised(name: str, value: Any, factor: Decimal) -> Any:
    if name in PRICE_FIELDS:
        return _price(value, factor)
    if name == "config":  # an entitlement's configuration is the product's, not a price
        return value
    if name == "rate":
        return (value * factor).quantize(_RATE_PLACES, rounding=ROUND_HALF_UP).normalize()
    if name == "markup_percent":
        marked_up = (100 + value) * factor - 100
        return marked_up.quantize(_RATE_PLACES, rounding=ROUND_HALF_UP).normalize()
    return _revise(value, factor)


def _price(value: Decimal | None, factor: Decimal) -> Decimal | None:
    if value is None:
        return None
    return (value * factor).quantize(_NANO, rounding=ROUND_HALF_UP).normalize()
