"""The reference: every price model in plain ``decimal.Decimal``, written from the price
book's definitions and independently of the kernel and its compiled tables, so that the
kernel can be checked against it row by row. It also explains an amount, tier by tier."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

from rating.money import NANO
from rating.plans import (
    Allowance,
    Charge,
    Dynamic,
    Graduated,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    Tier,
    TieredCharge,
    Volume,
)

# Enough digits that no product of a 64-bit quantity and a price is ever rounded.
_PRECISION = 80


@dataclass(frozen=True)
class Part:
    """One line of an explanation: ``units`` at ``unit_price``, plus ``flat_fee``. ``tier``
    numbers the charge's tiers from 1 (an allowance's included units are its tier 1)."""

    tier: int
    label: str
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal

    @property
    def amount(self) -> Decimal:
        return self.units * self.unit_price + self.flat_fee


@dataclass(frozen=True)
class Rated:
    amount: Decimal  # rounded half up to the nano-unit, after minimum and maximum
    unbounded: Decimal  # the parts' sum rounded half up to the nano-unit, before them
    parts: tuple[Part, ...]
    adjustment: str | None  # "minimum" or "maximum" when one applied


def per_unit(quantity: int, scale: int, unit_price: Decimal) -> Decimal:
    return rate_charge(
        PerUnit(model="per_unit", meter="-", unit_price=unit_price), quantity, scale
    ).amount


def rate_charge(charge: Charge, quantity: int, scale: int) -> Rated:
    """Rate ``quantity`` (an integer at the meter's ``scale``) under ``charge``; under a
    percentage charge, as one transaction beyond the period's free ones."""
    with localcontext() as context:
        context.prec = _PRECISION
        units = _converted(charge, Decimal(quantity).scaleb(-scale))
        if isinstance(charge, Percentage):
            # One transaction of ``quantity`` once the free ones are used: at its fee.
            paid = charge.model_copy(update={"free_events": None, "free_units": None})
            fee = transaction_fees(paid, [quantity], scale)[0]
            parts = [Part(1, "1 transaction", Decimal(1), fee, Decimal(0))]
        else:
            parts = _parts(charge, units)
        exact = sum((part.amount for part in parts), Decimal(0))
        amount = unbounded = exact.quantize(NANO, rounding=ROUND_HALF_UP)
        adjustment = None
        if charge.minimum is not None and amount < charge.minimum:
            amount, adjustment = charge.minimum, "minimum"
        if charge.maximum is not None and amount > charge.maximum:
            amount, adjustment = charge.maximum, "maximum"
        return Rated(amount.quantize(NANO), unbounded, tuple(parts), adjustment)


_ROUNDING = {"up": ROUND_CEILING, "down": ROUND_FLOOR, "half_up": ROUND_HALF_UP}


def _converted(charge: Charge, units: Decimal) -> Decimal:
    """The units the model prices: as metered, or divided by the unit conversion and
    rounded to whole units its way."""
    conversion = charge.unit_conversion
    if conversion is None:
        return units
    return (units / conversion.divide_by).to_integral_value(rounding=_ROUNDING[conversion.rounding])


def _parts(charge: Charge, units: Decimal) -> list[Part]:
    if isinstance(charge, TieredCharge) and charge.bills_at_zero and units == 0:
        # Zero usage reaches the first tier: nothing of its rate, all of its flat fee.
        first = charge.tiers[0]
        return [Part(1, "tier 1", Decimal(0), Decimal(0), first.flat_fee)]
    if isinstance(charge, PerUnit):
        return [Part(1, "per unit", units, charge.unit_price, Decimal(0))]
    if isinstance(charge, Dynamic):
        multiplier = 1 + charge.markup_percent / 100
        return [Part(1, "amounts carried", units, multiplier, Decimal(0))]
    if isinstance(charge, Graduated):
        return _graduated(charge.tiers, units, Decimal(0))
    if isinstance(charge, GraduatedPercentage):
        # A percent of the volume in each tier is that share of each unit of it.
        as_prices = tuple(
            Tier(up_to=t.up_to, unit_price=t.rate / 100, flat_fee=t.flat_fee) for t in charge.tiers
        )
        return _graduated(as_prices, units, Decimal(0))
    if isinstance(charge, Volume):
        return _volume(charge.tiers, units)
    if isinstance(charge, Package):
        return _package(charge, units)
    assert isinstance(charge, Allowance), f"{charge.model} is not priced by a quantity"
    return _allowance(charge, units)


def _graduated(
    tiers: tuple[Tier, ...], units: Decimal, offset: Decimal, first: int = 1
) -> list[Part]:
    """Each unit at the price of the tier it falls in; a tier's flat fee once it is reached."""
    parts, lower = [], Decimal(0)
    for number, tier in enumerate(tiers, start=first):
        upper = tier.up_to
        if units <= lower:
            break
        in_tier = units - lower if upper is None else min(units, upper) - lower
        label = f"tier {number}: {offset + lower} to {'∞' if upper is None else offset + upper}"
        parts.append(Part(number, label, in_tier, tier.unit_price, tier.flat_fee))
        if upper is None:
            break
        lower = upper
    return parts


def _volume(tiers: tuple[Tier, ...], units: Decimal) -> list[Part]:
    """All units at the price of the tier the total reaches (a boundary is in the lower tier)."""
    if units == 0:
        return []
    lower = Decimal(0)
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or units <= tier.up_to:
            label = f"tier {number}: {lower} to {'∞' if tier.up_to is None else tier.up_to}"
            return [Part(number, label, units, tier.unit_price, tier.flat_fee)]
        lower = tier.up_to
    raise AssertionError("the last tier is open-ended")


def _package(charge: Package, units: Decimal) -> list[Part]:
    """Blocks of the units beyond the free ones; the free ones cost nothing."""
    rounding = ROUND_CEILING if charge.rounding == "up" else ROUND_FLOOR
    billable = max(units - charge.free_units, Decimal(0))
    blocks = (billable / charge.package_size).to_integral_value(rounding=rounding)
    label = f"{blocks} package(s) of {charge.package_size} ({charge.rounding})"
    if charge.free_units:
        label += f" after {charge.free_units} free"
    return [Part(1, label, blocks, charge.package_price, Decimal(0))]


def _allowance(charge: Allowance, units: Decimal) -> list[Part]:
    included = min(units, charge.included)
    parts = [Part(1, f"included: up to {charge.included}", included, Decimal(0), Decimal(0))]
    overage = units - included
    if overage > 0:
        if charge.overage_tiers is not None:
            parts.extend(_graduated(charge.overage_tiers, overage, charge.included, first=2))
        else:
            assert charge.overage_price is not None
            parts.append(Part(2, "overage", overage, charge.overage_price, Decimal(0)))
    return parts


def transaction_fees(charge: Percentage, amounts: list[int], scale: int) -> list[Decimal]:
    """Each transaction's fee, in the order the period counted them, rounded half up to
    the nano-unit: the percentage model as its documentation states it, in Decimal."""
    fees = []
    with localcontext() as context:
        context.prec = _PRECISION
        volume = Decimal(0)
        for counted, scaled_amount in enumerate(amounts):
            amount = Decimal(scaled_amount).scaleb(-scale)
            has_allowance = charge.free_events is not None or charge.free_units is not None
            within_events = charge.free_events is None or counted < charge.free_events
            if not has_allowance or not within_events:
                free_volume_left = Decimal(0)
            elif charge.free_units is None:
                free_volume_left = amount  # free by count alone: all of it
            else:
                free_volume_left = max(Decimal(0), charge.free_units - volume)
            volume += amount
            if (
                has_allowance
                and within_events
                and amount <= free_volume_left
                and (charge.free_units is None or free_volume_left > 0)
            ):
                fees.append(Decimal(0))
                continue
            billable = amount - min(amount, free_volume_left)
            fee = billable * charge.rate / 100 + charge.fixed_fee
            if charge.per_transaction_minimum is not None:
                fee = max(fee, charge.per_transaction_minimum)
            if charge.per_transaction_maximum is not None:
                fee = min(fee, charge.per_transaction_maximum)
            fees.append(fee.quantize(NANO, rounding=ROUND_HALF_UP))
    return fees


def accrued_amount(charge: Percentage, fees: list[Decimal]) -> Decimal:
    """A period's transaction fees summed and bounded by the charge's minimum and maximum."""
    amount = sum(fees, Decimal(0))
    if charge.minimum is not None:
        amount = max(amount, charge.minimum)
    if charge.maximum is not None:
        amount = min(amount, charge.maximum)
    return amount
