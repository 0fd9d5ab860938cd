"""The price book: meters, plans (with their versions) and add-ons, as validated, frozen
objects, and the lookups everything prices by: a plan's versions, the one in force on a
day, a subscription's variant of a plan (``variants``). ``loading`` reads it from YAML.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import date
from decimal import Decimal, localcontext
from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import INT64_MAX, MoneyError, to_nanos
from rating.variants import Variant, VariantError, composed, parse

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class PriceBookError(ValueError):
    """The price book cannot be loaded; the message says where and why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_UNIT_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


class Meter(_Frozen):
    id: str = Field(pattern=IDENTIFIER)
    unit: str = "unit"
    scale: int = Field(default=0, ge=0, le=9, description="decimal places of quantities")
    group_by: tuple[Annotated[str, Field(pattern=IDENTIFIER)], ...] = Field(
        default=(), description="event properties whose values split usage into groups"
    )
    aggregation: Literal[
        "sum", "count", "max", "min", "avg", "latest", "unique_count", "weighted_sum"
    ] = Field(
        default="sum",
        description="over a period: the sum of quantities, the number of events, the "
        "largest quantity, the smallest, their mean (rounded half up to the meter's scale), "
        "the quantity of the latest event (a gauge such as seats), the number of "
        "distinct values of the property named by ``unique`` (active users), or a gauge's "
        "value over time (``weighted_sum``: GB-hours from reports of the current size)",
    )
    per: Literal["second", "minute", "hour", "day"] = Field(
        default="hour",
        description="for weighted_sum: the time unit the value is weighed by (GB × hours)",
    )
    unique: str | None = Field(
        default=None,
        pattern=IDENTIFIER,
        description="for unique_count: the event property whose distinct values are counted",
    )
    event_type: str | None = Field(
        default=None,
        min_length=1,
        description="the CloudEvents type the gateway reads this meter from; unset: the id",
    )
    value: str = Field(
        default="quantity",
        pattern=IDENTIFIER,
        description="the property of a CloudEvent's data holding the quantity (not read "
        "for count meters)",
    )

    @property
    def reads_type(self) -> str:
        return self.event_type or self.id

    @field_validator("group_by")
    @classmethod
    def _distinct(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        _require_unique("group_by property", list(names))
        return names

    @property
    def per_ms(self) -> int:
        """A weighted sum's time unit in milliseconds."""
        return _UNIT_MS[self.per]

    @model_validator(mode="after")
    def _per_only_for_a_weighted_sum(self) -> Meter:
        if "per" in self.model_fields_set and self.aggregation != "weighted_sum":
            raise ValueError("only a weighted_sum meter weighs by time (per)")
        return self

    @model_validator(mode="after")
    def _unique_names_its_property(self) -> Meter:
        if (self.aggregation == "unique_count") != (self.unique is not None):
            raise ValueError(
                "a unique_count meter names the property it counts (unique: user_id), "
                "and only a unique_count meter has one"
            )
        return self


def _nano_price(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("a price cannot be negative")
    try:
        to_nanos(value)
    except MoneyError as error:
        raise ValueError(str(error)) from error
    return value


NanoPrice = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_nano_price)]


def rate_price(percent: Decimal) -> Decimal:
    """A rate in percent of an amount as the price of one unit of that amount."""
    return percent / 100


def _nano_percent(value: Decimal) -> Decimal:
    """A rate whose price per unit is a whole number of nano-units (at most 7 decimal
    places of a percent), so that the kernel prices it exactly."""
    if value < 0:
        raise ValueError("a rate cannot be negative")
    try:
        to_nanos(rate_price(value))
    except MoneyError:
        raise ValueError(
            f"rate {value}% has more than 7 decimal places: its price per unit would not be "
            "a whole number of nano-units"
        ) from None
    return value


Percent = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_nano_percent)]


def _nano_markup(value: Decimal) -> Decimal:
    """A markup whose multiplier of the cost is a whole number of nano-units; down to
    -100 (a price revision may cut below the cost, never below nothing)."""
    _nano_percent(value + 100)
    return value


Markup = Annotated[Decimal, Field(allow_inf_nan=False, ge=-100), AfterValidator(_nano_markup)]


Quantity = Annotated[Decimal, Field(allow_inf_nan=False, gt=0)]


class Tier(_Frozen):
    """Quantities above the previous tier's ``up_to`` and up to this one's (inclusive);
    the last tier has no ``up_to``. A tier's flat fee is charged once usage reaches it."""

    up_to: Quantity | None = None
    unit_price: NanoPrice = Decimal(0)
    flat_fee: NanoPrice = Decimal(0)


class PercentTier(_Frozen):
    """A tier of transaction volume (bounds as in ``Tier``) at a rate in percent."""

    up_to: Quantity | None = None
    rate: Percent = Decimal(0)
    flat_fee: NanoPrice = Decimal(0)

    def as_tier(self) -> Tier:
        return Tier(up_to=self.up_to, unit_price=rate_price(self.rate), flat_fee=self.flat_fee)


_T = TypeVar("_T", Tier, PercentTier)


def _check_tiers(tiers: tuple[_T, ...]) -> tuple[_T, ...]:
    for number, (tier, following) in enumerate(itertools.pairwise(tiers), start=1):
        if tier.up_to is None:
            raise ValueError(f"tier {number + 1} comes after the open-ended tier {number}")
        if following.up_to is not None and following.up_to <= tier.up_to:
            raise ValueError(
                f"tier {number + 1} (up_to {following.up_to}) does not start above "
                f"tier {number} (up_to {tier.up_to}): tiers must be in increasing order"
            )
    if tiers[-1].up_to is not None:
        raise ValueError(
            "the last tier must be open-ended (no up_to), so every quantity has a price"
        )
    return tiers


Tiers = Annotated[tuple[Tier, ...], Field(min_length=1), AfterValidator(_check_tiers)]
PercentTiers = Annotated[tuple[PercentTier, ...], Field(min_length=1), AfterValidator(_check_tiers)]

# Whether a period with zero usage reaches a tiered charge's first tier, and so bills that
# tier's flat fee. Meterline's rule is that it reaches none; Lago and OpenMeter bill it.
# A charge chooses; an invoice then bills it even for a period without any event.
ZeroUsage = Literal["no_tier", "first_tier"]


class UnitConversion(_Frozen):
    """The period-to-date quantity divided by ``divide_by`` (in the meter's units) and
    rounded to whole units before the model prices it: per started 1,000 requests, per GB
    from bytes, per hour from seconds (OpenMeter's unit config). The model's own
    quantities (tier bounds, package size, included and free units) count converted
    units, so they are whole numbers."""

    divide_by: Annotated[int, Field(ge=1, le=10**18)]
    rounding: Literal["up", "down", "half_up"] = "up"


class _Charge(_Frozen):
    meter: str
    minimum: NanoPrice | None = None
    maximum: NanoPrice | None = None
    unit_conversion: UnitConversion | None = None

    @model_validator(mode="after")
    def _bounds_in_order(self) -> _Charge:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        """The quantities this charge declares, named, for the meter-scale check."""
        return ()


class PerUnit(_Charge):
    model: Literal["per_unit"]
    unit_price: NanoPrice


class TieredCharge(_Charge):
    """A charge by tiers, which says whether zero usage reaches its first tier."""

    zero_usage: ZeroUsage = "no_tier"

    @property
    def bills_at_zero(self) -> bool:
        return self.zero_usage == "first_tier"


class Graduated(TieredCharge):
    """Each unit priced at the rate of the tier it falls in."""

    model: Literal["graduated"]
    tiers: Tiers

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        return _tier_quantities(self.tiers)


class Volume(TieredCharge):
    """Every unit priced at the rate of the tier the total reaches."""

    model: Literal["volume"]
    tiers: Tiers

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        return _tier_quantities(self.tiers)


class Package(_Charge):
    """A price per block of ``package_size`` units: started blocks (up) or completed (down),
    counted over the units beyond the first ``free_units`` (Lago's package with free units:
    "the first 100 calls free, then 5.00 per started 1,000")."""

    model: Literal["package"]
    package_size: Quantity
    package_price: NanoPrice
    rounding: Literal["up", "down"] = "up"
    free_units: Annotated[Decimal, Field(allow_inf_nan=False, ge=0)] = Decimal(0)

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        return (("package_size", self.package_size), ("free_units", self.free_units))


class Allowance(_Charge):
    """The first ``included`` units free, the rest at an overage price or overage tiers
    (whose ``up_to`` count overage units)."""

    model: Literal["allowance"]
    included: Annotated[Decimal, Field(allow_inf_nan=False, ge=0)]
    overage_price: NanoPrice | None = None
    overage_tiers: Tiers | None = None
    rollover: Annotated[Decimal, Field(allow_inf_nan=False, ge=0)] | None = Field(
        default=None,
        description="included units a period leaves unused, carried into the next as a "
        "grant in units, at most this many",
    )

    @model_validator(mode="after")
    def _one_overage(self) -> Allowance:
        if (self.overage_price is None) == (self.overage_tiers is None):
            raise ValueError("give exactly one of overage_price and overage_tiers")
        return self

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        carried = (("rollover", self.rollover),) if self.rollover is not None else ()
        return (("included", self.included), *carried,
                *_tier_quantities(self.overage_tiers or ()))  # fmt: skip


class GraduatedPercentage(TieredCharge):
    """A rate in percent of the period's transaction volume that changes by tiers of that
    volume: each part of the volume at its tier's rate, plus each reached tier's flat fee
    (Lago's graduated percentage). The meter sums transaction amounts in the plan's
    currency."""

    model: Literal["graduated_percentage"]
    tiers: PercentTiers

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        return _tier_quantities(self.tiers)


class Percentage(_Charge):
    """A share of each transaction: ``rate`` percent of its amount plus ``fixed_fee``,
    bounded per transaction by ``per_transaction_minimum`` and ``per_transaction_maximum``
    ("2.9% + 0.30, at least 0.50"). The first ``free_events`` transactions of a period and
    the first ``free_units`` of its volume are free (when both are set, transactions are
    free while both last). Each transaction's fee is rounded half up to the nano-unit;
    the period's amount is their sum, bounded by the charge's ``minimum`` and ``maximum``.
    The meter sums transaction amounts in the plan's currency. The rule each transaction
    follows is ``rating.transactions``."""

    model: Literal["percentage"]
    rate: Percent
    fixed_fee: NanoPrice = Decimal(0)
    free_units: Annotated[Decimal, Field(allow_inf_nan=False, ge=0)] | None = None
    free_events: Annotated[int, Field(ge=0)] | None = None
    per_transaction_minimum: NanoPrice | None = None
    per_transaction_maximum: NanoPrice | None = None

    @model_validator(mode="after")
    def _per_transaction(self) -> Percentage:
        low, high = self.per_transaction_minimum, self.per_transaction_maximum
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"per_transaction_minimum {low} is above per_transaction_maximum {high}"
            )
        if self.unit_conversion is not None:
            raise ValueError(
                "a percentage charge prices each transaction's amount as it is: it takes no "
                "unit_conversion"
            )
        return self

    def quantities(self) -> tuple[tuple[str, Decimal], ...]:
        return () if self.free_units is None else (("free_units", self.free_units),)


class Dynamic(_Charge):
    """The amounts the events carry (an upstream model bill, a shipping cost), which the
    meter sums in the plan's currency, billed with a markup: the period's sum times
    1 + markup_percent / 100 (dynamic pricing in Lago and OpenMeter; a negative markup
    bills less than the cost)."""

    model: Literal["dynamic"]
    markup_percent: Markup = Decimal(0)


def _tier_quantities(tiers: tuple[_T, ...]) -> tuple[tuple[str, Decimal], ...]:
    return tuple(
        (f"tier {number} up_to", tier.up_to)
        for number, tier in enumerate(tiers, start=1)
        if tier.up_to is not None
    )


Charge = Annotated[
    PerUnit | Graduated | Volume | Package | Allowance | Percentage | GraduatedPercentage | Dynamic,
    Field(discriminator="model"),
]
# The models that price an amount of money the events carry: their meter sums it.
AMOUNT_MODELS = (Percentage, GraduatedPercentage, Dynamic)


def _known_currency(value: str) -> str:
    if value not in MINOR_UNIT_DIGITS:
        raise ValueError(f"unknown currency {value!r} (expected an ISO 4217 code such as USD)")
    return value


Currency = Annotated[str, AfterValidator(_known_currency)]


class FixedFee(_Frozen):
    """A recurring amount per period, prorated by day when a subscription starts, ends or
    changes plan version inside the period."""

    id: str = Field(pattern=IDENTIFIER)
    name: str = ""
    amount: NanoPrice


class Coupon(_Frozen):
    """A discount: ``percent_off`` the lines it covers, or ``amount_off`` them (in
    ``currency``, prorated by the subscription's active days like a fixed fee), never
    below zero. It covers one meter's usage lines (``meter``) or every line of the period
    (of its plan, when a plan carries it). It lasts ``periods`` billing periods, counting
    the one it starts in, or until the day ``until`` (periods starting before it), or for
    good. Subscriptions take one on from a day (``meterline subscriptions add-coupon``);
    a plan's ``discounts`` apply from each subscription's start on it."""

    id: str = Field(pattern=IDENTIFIER)
    name: str = ""
    percent_off: Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=100)] | None = None
    amount_off: NanoPrice | None = None
    currency: Currency | None = None
    meter: str | None = Field(default=None, pattern=IDENTIFIER)
    periods: Annotated[int, Field(ge=1)] | None = None
    until: date | None = None

    @model_validator(mode="after")
    def _one_discount(self) -> Coupon:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("give exactly one of percent_off and amount_off")
        if self.amount_off is not None and (self.amount_off == 0 or self.currency is None):
            raise ValueError("an amount_off is more than 0, in a currency (currency: USD)")
        if self.percent_off is not None and self.currency is not None:
            raise ValueError("a percent_off is in no currency: leave currency out")
        if self.periods is not None and self.until is not None:
            raise ValueError("give periods or until, not both")
        return self

    @property
    def label(self) -> str:
        return f"coupon {self.id!r}"

    @property
    def terms(self) -> str:
        """What it takes off, for people: "20% off", "10 USD off api_calls"."""
        if self.amount_off is not None:
            off = f"{self.amount_off.normalize():f} {self.currency} off"
        else:
            assert self.percent_off is not None
            off = f"{self.percent_off.normalize():f}% off"
        return off + (f" {self.meter}" if self.meter else "")


class Entitlement(_Frozen):
    """A feature a plan or add-on gives: on or off (``boolean``), a configuration the
    product reads (``config``: any JSON object), or so much of a meter per period
    (``metered``), past which usage is billed as overage (``soft``) or denied (``hard``)."""

    feature: str = Field(pattern=IDENTIFIER)
    kind: Literal["boolean", "config", "metered"] = "boolean"
    enabled: bool = True  # boolean: whether the feature is on
    config: dict[str, Any] | None = None  # config: what the product reads
    meter: str | None = None  # metered: the meter whose period-to-date quantity counts
    limit: Decimal | None = Field(default=None, ge=0, description="metered: per period")
    enforcement: Literal["soft", "hard"] = "soft"

    @model_validator(mode="after")
    def _complete(self) -> Entitlement:
        metered = self.meter is not None or self.limit is not None
        if self.kind == "metered" and (self.meter is None or self.limit is None):
            raise ValueError(f"entitlement {self.feature!r}: a metered one needs meter and limit")
        if self.kind != "metered" and (metered or self.enforcement != "soft"):
            raise ValueError(f"entitlement {self.feature!r}: meter, limit and enforcement "
                             "are for a metered one")  # fmt: skip
        if self.kind == "config" and self.config is None:
            raise ValueError(f"entitlement {self.feature!r}: a config one needs config")
        if self.kind != "config" and self.config is not None:
            raise ValueError(f"entitlement {self.feature!r}: config is for a config one")
        return self


class Plan(_Frozen):
    """One version of a plan. Versions of a plan share its id and currency; each is in
    force from its ``effective_from`` day (UTC) until the next version's."""

    id: str = Field(pattern=IDENTIFIER)
    name: str = ""
    version: int = Field(default=1, ge=1)
    effective_from: date | None = None
    currency: Currency
    interval: Literal["month"] = "month"
    charges: tuple[Charge, ...] = ()
    fixed_fees: tuple[FixedFee, ...] = ()
    commitment: NanoPrice | None = Field(
        default=None, description="minimum spend per period; a shortfall is billed as a true-up"
    )
    discounts: tuple[Annotated[str, Field(pattern=IDENTIFIER)], ...] = Field(
        default=(), description="coupons every subscription on the plan gets from its start"
    )
    entitlements: tuple[Entitlement, ...] = ()

    @model_validator(mode="after")
    def _bills_something(self) -> Plan:
        if not self.charges and not self.fixed_fees:
            raise ValueError("a plan needs at least one charge or fixed fee")
        return self

    @property
    def label(self) -> str:
        return f"plan {self.id!r}" + (f" version {self.version}" if self.version > 1 else "")

    @property
    def minor_digits(self) -> int:
        return MINOR_UNIT_DIGITS[self.currency]

    def charge_for(self, meter: str) -> Charge | None:
        return next((charge for charge in self.charges if charge.meter == meter), None)


class AddOn(_Frozen):
    """Charges or fees a subscription can add to its plan from a day on, and remove again
    (premium support, a charge on a meter its plan does not price). Unversioned: a new
    price is a new add-on."""

    id: str = Field(pattern=IDENTIFIER)
    name: str = ""
    currency: Currency
    charges: tuple[Charge, ...] = ()
    fixed_fees: tuple[FixedFee, ...] = ()
    entitlements: tuple[Entitlement, ...] = ()

    @model_validator(mode="after")
    def _adds_something(self) -> AddOn:
        if not self.charges and not self.fixed_fees and not self.entitlements:
            raise ValueError("an add-on needs at least one charge, fixed fee or entitlement")
        return self

    @property
    def label(self) -> str:
        return f"add-on {self.id!r}"


class PriceBook(_Frozen):
    meters: tuple[Meter, ...] = Field(min_length=1)
    plans: tuple[Plan, ...] = Field(min_length=1)
    add_ons: tuple[AddOn, ...] = ()
    coupons: tuple[Coupon, ...] = ()
    # The variants subscriptions are on ("growth@+5%"), made once each and kept: derived
    # from the frozen fields above, never changing what the book says.
    _made: dict[str, list[Plan]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> PriceBook:
        _require_unique("meter", [meter.id for meter in self.meters])
        _require_unique("plan (id, version)", [f"{p.id}, {p.version}" for p in self.plans])
        _require_unique("add-on", [add_on.id for add_on in self.add_ons])
        _require_unique("coupon", [coupon.id for coupon in self.coupons])
        known = {meter.id for meter in self.meters}
        coupons = {coupon.id: coupon for coupon in self.coupons}
        for coupon in self.coupons:
            if coupon.meter is not None and coupon.meter not in known:
                raise ValueError(
                    f"{coupon.label}: meter {coupon.meter!r} is not declared under meters"
                )
        for discounted in self.plans:
            label = discounted.label
            _require_unique(f"{label}: discount", list(discounted.discounts))
            for coupon_id in discounted.discounts:
                found = coupons.get(coupon_id)
                if found is None:
                    raise ValueError(
                        f"{label}: discount {coupon_id!r} is not declared under coupons"
                    )
                if found.currency is not None and found.currency != discounted.currency:
                    raise ValueError(
                        f"{label}: {found.label} takes off {found.currency}, the plan bills "
                        f"{discounted.currency}"
                    )
        priced: list[Plan | AddOn] = [*self.plans, *self.add_ons]
        for plan in priced:
            _require_unique(f"{plan.label}: meter", [c.meter for c in plan.charges])
            _require_unique(f"{plan.label}: fixed fee", [fee.id for fee in plan.fixed_fees])
            _require_unique(f"{plan.label}: entitlement",
                            [given.feature for given in plan.entitlements])  # fmt: skip
            for given in plan.entitlements:
                if given.meter is None:
                    continue
                if given.meter not in known:
                    raise ValueError(
                        f"{plan.label}: entitlement {given.feature!r} on meter "
                        f"{given.meter!r}, which is not declared under meters"
                    )
                assert given.limit is not None  # a metered entitlement has both
                problem = _scaled_problem(given.limit, self.meter(given.meter).scale)
                if problem:
                    raise ValueError(f"{plan.label}: entitlement {given.feature!r}: limit "
                                     f"{given.limit} {problem}")  # fmt: skip
            for charge in plan.charges:
                if charge.meter not in known:
                    raise ValueError(
                        f"{plan.label}: charge on meter {charge.meter!r}, "
                        "which is not declared under meters"
                    )
                meter = self.meter(charge.meter)
                if isinstance(charge, Allowance) and charge.rollover and meter.group_by:
                    raise ValueError(
                        f"{plan.label}: charge on meter {charge.meter!r}: rollover carries a "
                        "period's unused included units, and a grouped meter includes them "
                        "per group: give rollover on a meter without group_by"
                    )
                if isinstance(charge, AMOUNT_MODELS) and meter.aggregation != "sum":
                    raise ValueError(
                        f"{plan.label}: charge on meter {charge.meter!r}: a {charge.model} "
                        "charge prices the amounts the events carry, so its meter sums them "
                        f"(aggregation: sum, not {meter.aggregation})"
                    )
                metered = meter.scale
                conversion = charge.unit_conversion
                if conversion is not None and conversion.divide_by * 10**metered > INT64_MAX:
                    raise ValueError(
                        f"{plan.label}: charge on meter {charge.meter!r}: unit_conversion "
                        f"divide_by {conversion.divide_by} is more than any quantity of the "
                        "meter can hold (64 bits at its scale)"
                    )
                # A converted charge counts whole converted units.
                scale = 0 if conversion else metered
                for name, quantity in charge.quantities():
                    problem = _scaled_problem(quantity, scale)
                    if problem:
                        raise ValueError(
                            f"{plan.label}: charge on meter {charge.meter!r}: {name} "
                            f"{quantity} {problem}"
                        )
        for versions in self.versions.values():
            _check_versions(versions)
        return self

    @cached_property
    def versions(self) -> dict[str, list[Plan]]:
        """Each plan id's versions, oldest first."""
        by_id: dict[str, list[Plan]] = defaultdict(list)
        for plan in self.plans:
            by_id[plan.id].append(plan)
        return {plan_id: sorted(found, key=lambda p: p.version) for plan_id, found in by_id.items()}

    def versions_of(self, plan_id: str) -> list[Plan]:
        """A plan's versions, oldest first, a subscription's variants ("growth+support",
        "growth@+5%") included; none for a plan the book cannot make."""
        try:
            return self.variant_versions(plan_id)
        except PriceBookError:
            return []

    def knows(self, plan_id: str) -> bool:
        return bool(self.versions_of(plan_id))

    def variant_versions(self, plan_id: str) -> list[Plan]:
        """Like ``versions_of``, but raises ``PriceBookError`` saying why the book cannot
        make the plan."""
        if plan_id in self.versions:
            return self.versions[plan_id]
        if plan_id not in self._made:
            try:
                variant = parse(plan_id)
            except VariantError as error:
                raise PriceBookError(str(error)) from None
            if variant.id != plan_id:
                raise PriceBookError(f"{plan_id!r} is written {variant.id!r}")
            versions = self.versions.get(variant.base)
            if not versions:
                raise PriceBookError(f"plan {variant.base!r} is not in the price book")
            if variant.version is not None:
                kept = [p for p in versions if p.version == variant.version]
                if not kept:
                    numbers = ", ".join(str(p.version) for p in versions)
                    raise PriceBookError(
                        f"plan {variant.base!r} has no version {variant.version} ({numbers})"
                    )
                # Kept whatever the day: in force from the start, never replaced.
                versions = [kept[0].model_copy(update={"effective_from": None})]
            self._made[plan_id] = [self._variant(plan, variant) for plan in versions]
        return self._made[plan_id]

    def add_on(self, add_on_id: str) -> AddOn:
        return _named(self.add_ons, add_on_id, "add-on")

    def _variant(self, plan: Plan, variant: Variant) -> Plan:
        added = [(a.label, a.currency, a.model_dump()) for a in map(self.add_on, variant.add_ons)]
        try:
            data = composed(plan.label, plan.currency, plan.model_dump(), added, variant.percent)
            made = Plan.model_validate(data)
        except VariantError as error:
            raise PriceBookError(str(error)) from None
        except ValidationError as error:
            problem = error.errors()[0]["msg"]
            raise PriceBookError(f"{plan.label} as {variant.id}: {problem}") from None
        return made.model_copy(update={"id": variant.id})

    def plan(self, plan_id: str, version: int | None = None) -> Plan:
        """A plan's given version, or its newest."""
        versions = self.versions_of(plan_id)
        if not versions:
            raise KeyError(plan_id)
        if version is None:
            return versions[-1]
        for plan in versions:
            if plan.version == version:
                return plan
        raise KeyError(f"{plan_id} version {version}")

    def plan_at(self, plan_id: str, day: date) -> Plan | None:
        """The version of a plan in force on ``day``; None before its first version."""
        in_force = None
        for plan in self.versions_of(plan_id):
            if plan.effective_from is None or plan.effective_from <= day:
                in_force = plan
        return in_force

    def coupon(self, coupon_id: str) -> Coupon:
        return _named(self.coupons, coupon_id, "coupon")

    def meter(self, meter_id: str) -> Meter:
        for meter in self.meters:
            if meter.id == meter_id:
                return meter
        raise KeyError(meter_id)


_Named = TypeVar("_Named", AddOn, Coupon)


def _named(items: tuple[_Named, ...], wanted: str, what: str) -> _Named:
    """The item of the book called ``wanted``, or a ``PriceBookError`` listing the known."""
    for item in items:
        if item.id == wanted:
            return item
    known = ", ".join(item.id for item in items) or "none"
    raise PriceBookError(f"{what} {wanted!r} is not in the price book ({what}s: {known})")


def _check_versions(versions: list[Plan]) -> None:
    """Versions of one plan: numbered 1, 2, 3…, later ones dated after earlier ones."""
    first = versions[0]
    for number, plan in enumerate(versions, start=1):
        if plan.version != number:
            raise ValueError(f"plan {first.id!r}: versions must be numbered 1, 2, 3… in order")
        if plan.currency != first.currency:
            raise ValueError(
                f"{plan.label}: currency {plan.currency} differs from version 1 "
                f"({first.currency}); a plan in another currency is another plan"
            )
    for earlier, later in itertools.pairwise(versions):
        if later.effective_from is None:
            raise ValueError(f"{later.label}: needs effective_from (the day it takes effect)")
        if earlier.effective_from is not None and later.effective_from <= earlier.effective_from:
            raise ValueError(
                f"{later.label}: effective_from {later.effective_from} is not after "
                f"version {earlier.version}'s ({earlier.effective_from})"
            )


def decimal_places(value: Decimal) -> int:
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))


def scaled(value: Decimal, scale: int) -> int:
    """A quantity in meter units as the integer the kernels see."""
    with localcontext() as context:
        context.prec = 80
        return int(value.scaleb(scale))


def _scaled_problem(value: Decimal, scale: int) -> str | None:
    if decimal_places(value) > scale:
        return f"has more decimal places than the meter's scale ({scale})"
    if abs(scaled(value, scale)) > INT64_MAX:
        return "is too large for a 64-bit quantity at the meter's scale"
    return None


def _require_unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for identifier in ids:
        if identifier in seen:
            raise ValueError(f"{what} {identifier!r} is declared twice")
        seen.add(identifier)
