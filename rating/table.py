"""A price book compiled into the two matrices the kernel indexes: one row per charge,
one row per tier. Every model is expressed as graduated tiers, volume tiers or a package."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np

from rating import kernels as k
from rating.money import INT64_MAX, from_nanos, to_nanos
from rating.plans import (
    Allowance,
    Charge,
    Dynamic,
    Graduated,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    Plan,
    PriceBook,
    Tier,
    TieredCharge,
    Volume,
    rate_price,
    scaled,
)
from rating.transactions import TransactionFees


@dataclass(frozen=True)
class TierColumn:
    """What one column of a charge's breakdown bills, for people to read."""

    label: str
    unit_price: Decimal
    flat_fee: Decimal


@dataclass(frozen=True)
class ChargeRef:
    plan: str
    version: int
    meter: str
    columns: tuple[TierColumn, ...]
    max_quantity: int  # every quantity up to this has an amount that fits in 64 bits
    # The decimal places of its breakdown's units: the meter's, or 0 where the breakdown
    # counts whole blocks (a package) or whole converted units (a unit conversion).
    breakdown_scale: int
    # A percentage charge's rule per transaction: its totals are rated from the fees
    # accrued as their events were counted, not from their volume.
    transactions: TransactionFees | None = None


@dataclass(frozen=True)
class _ScaledTier:
    lower: int  # exclusive lower bound, in scaled units
    price: int  # nano-units per whole unit
    flat: int  # nano-units
    label: str


class ChargeTable:
    """The compiled price book. A plan the book resolves but this table has not compiled
    yet (a subscription's revised plan, "pro@+5%") is compiled the first time it is asked
    for; rows already handed out never move."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self.refs: list[ChargeRef] = []
        self.index: dict[tuple[str, int, str], int] = {}  # (plan, version, meter) -> row
        self._charge_rows: list[list[int]] = []
        self._tier_rows: list[list[int]] = []
        self.charges = np.empty((0, k.CHARGE_COLUMNS), dtype=np.int64)
        self.tiers = np.empty((0, k.TIER_COLUMNS), dtype=np.int64)
        self._add(book.plans)

    @classmethod
    def compile(cls, book: PriceBook) -> ChargeTable:
        return cls(book)

    def row(self, plan: Plan, meter: str) -> int:
        """The row of ``plan``'s charge on ``meter``; KeyError when it has none."""
        key = (plan.id, plan.version, meter)
        if key not in self.index and plan.charge_for(meter) is not None:
            self._add([plan])
        return self.index[key]

    def charge_of(self, plan: str, version: int, meter: str) -> int | None:
        if (plan, version, meter) not in self.index:
            try:
                found = self.book.plan(plan, version)
            except KeyError:
                return None
            if found.charge_for(meter) is None:
                return None
            self._add([found])
        return self.index[(plan, version, meter)]

    def _add(self, plans: Iterable[Plan]) -> None:
        book = self.book
        for plan in plans:
            for charge in plan.charges:
                metered = book.meter(charge.meter).scale
                conversion = charge.unit_conversion
                # A converted charge prices whole converted units.
                scale = 0 if conversion else metered
                divisor = 10**scale
                row = [0] * k.CHARGE_COLUMNS
                row[k.DIVISOR] = divisor
                prefix = ""
                if conversion is not None:
                    row[k.CONVERT_BY] = conversion.divide_by * 10**metered
                    row[k.CONVERT_ROUNDING] = _ROUNDINGS[conversion.rounding]
                    prefix = f"per {conversion.divide_by} (rounded {conversion.rounding}), "
                row[k.MINIMUM] = to_nanos(charge.minimum) if charge.minimum is not None else 0
                row[k.MAXIMUM] = (
                    to_nanos(charge.maximum) if charge.maximum is not None else k.NO_MAXIMUM
                )
                row[k.MAX_BLOCKS] = INT64_MAX
                transactions = None
                if isinstance(charge, Percentage):
                    row[k.KIND] = k.ACCRUED
                    transactions = TransactionFees.of(charge, scale)
                    columns: tuple[TierColumn, ...] = (
                        TierColumn(_transaction_label(charge), Decimal(0), Decimal(0)),
                    )
                    own_tiers: list[list[int]] = []
                elif isinstance(charge, Package):
                    _package(row, charge, scale)
                    free = f" after {charge.free_units} free" if charge.free_units else ""
                    columns = (
                        TierColumn(
                            f"{prefix}packages of {charge.package_size} "
                            f"(rounded {charge.rounding}){free}",
                            charge.package_price.normalize(),
                            Decimal(0),
                        ),
                    )
                    own_tiers = []
                else:
                    kind, tiers = _tiers_of(charge, scale)
                    row[k.KIND] = kind
                    row[k.ZERO_TIER] = int(
                        isinstance(charge, TieredCharge) and charge.bills_at_zero
                    )
                    row[k.FIRST_TIER] = len(self._tier_rows)
                    row[k.TIER_COUNT] = len(tiers)
                    own_tiers = _tier_rows(kind, tiers, divisor)
                    self._tier_rows.extend(own_tiers)
                    columns = tuple(
                        TierColumn(prefix + t.label, _price(t.price), _price(t.flat)) for t in tiers
                    )
                limit = _metered_limit(row, _max_quantity(row, own_tiers))
                self.index[(plan.id, plan.version, charge.meter)] = len(self.refs)
                self.refs.append(
                    ChargeRef(
                        plan.id,
                        plan.version,
                        charge.meter,
                        columns,
                        limit,
                        breakdown_scale=0 if isinstance(charge, Package) else scale,
                        transactions=transactions,
                    )
                )
                self._charge_rows.append(row)
        self.charges = np.asarray(self._charge_rows, dtype=np.int64).reshape(-1, k.CHARGE_COLUMNS)
        # Column-major, so the tier search reads a charge's lower bounds contiguously.
        self.tiers = np.asfortranarray(
            np.asarray(self._tier_rows, dtype=np.int64).reshape(-1, k.TIER_COLUMNS)
        )


def _transaction_label(charge: Percentage) -> str:
    """A percentage charge's rule, for people: "transactions at 2.9% + 0.30 each, at
    least 0.50"."""
    label = f"transactions at {charge.rate.normalize():f}%"
    if charge.fixed_fee:
        label += f" + {charge.fixed_fee.normalize():f} each"
    bounds = [
        f"{word} {value.normalize():f}"
        for word, value in (("at least", charge.per_transaction_minimum),
                            ("at most", charge.per_transaction_maximum))
        if value is not None
    ]  # fmt: skip
    free = [
        f"the first {value} {what} free"
        for what, value in (("transactions", charge.free_events), ("of volume", charge.free_units))
        if value is not None
    ]
    return ", ".join([label, *bounds, *free])


def _price(nanos: int) -> Decimal:
    """A price as people write it: 0.0005, not 0.000500000."""
    return from_nanos(nanos).normalize()


def _package(row: list[int], charge: Package, scale: int) -> None:
    price = to_nanos(charge.package_price)
    row[k.KIND] = k.PACKAGE
    row[k.PACKAGE_SIZE] = scaled(charge.package_size, scale)
    row[k.PACKAGE_PRICE] = price
    row[k.ROUND_UP] = int(charge.rounding == "up")
    row[k.MAX_BLOCKS] = INT64_MAX // price if price else INT64_MAX
    row[k.FREE_UNITS] = scaled(charge.free_units, scale)


def _scale_tiers(
    tiers: tuple[Tier, ...], offset: Decimal, scale: int, prefix: str = ""
) -> list[_ScaledTier]:
    result, lower = [], offset
    for number, tier in enumerate(tiers, start=1):
        upper = "∞" if tier.up_to is None else f"{offset + tier.up_to}"
        label = f"{prefix}tier {number}: {lower} to {upper}"
        scaled_tier = _ScaledTier(
            scaled(lower, scale), to_nanos(tier.unit_price), to_nanos(tier.flat_fee), label
        )
        result.append(scaled_tier)
        if tier.up_to is not None:
            lower = offset + tier.up_to
    return result


def _tiers_of(charge: Charge, scale: int) -> tuple[int, list[_ScaledTier]]:
    if isinstance(charge, PerUnit):
        return k.GRADUATED, [_ScaledTier(0, to_nanos(charge.unit_price), 0, "per unit")]
    if isinstance(charge, Graduated):
        return k.GRADUATED, _scale_tiers(charge.tiers, Decimal(0), scale)
    if isinstance(charge, Volume):
        return k.VOLUME, _scale_tiers(charge.tiers, Decimal(0), scale)
    if isinstance(charge, GraduatedPercentage):
        tiers = _scale_tiers(tuple(t.as_tier() for t in charge.tiers), Decimal(0), scale)
        rates = (f"{t.rate.normalize():f}%" for t in charge.tiers)
        labelled = [
            replace(t, label=f"{t.label} at {r}") for t, r in zip(tiers, rates, strict=True)
        ]
        return k.GRADUATED, labelled
    if isinstance(charge, Dynamic):
        price = to_nanos(1 + rate_price(charge.markup_percent))
        percent = charge.markup_percent.normalize()
        markup = f" {'+' if percent > 0 else ''}{percent:f}%" if percent else ""
        return k.GRADUATED, [_ScaledTier(0, price, 0, f"amounts carried{markup}")]
    assert isinstance(charge, Allowance)
    # The included units are a free first tier, even when there are none, so that the
    # overage tiers keep their numbers.
    free = _ScaledTier(0, 0, 0, f"included: up to {charge.included}")
    if charge.overage_price is not None:
        overage = [_ScaledTier(
            scaled(charge.included, scale), to_nanos(charge.overage_price), 0, "overage"
        )]  # fmt: skip
    else:
        assert charge.overage_tiers is not None
        overage = _scale_tiers(charge.overage_tiers, charge.included, scale, "overage ")
    return k.GRADUATED, [free, *overage]


def _tier_rows(kind: int, tiers: list[_ScaledTier], divisor: int) -> list[list[int]]:
    """Each tier with its offset, its fixed part (for graduated tiers, everything billed
    below it) and the largest units that fit."""
    rows = []
    numerator = 0  # everything below this tier, in 1/divisor nano-units
    for number, tier in enumerate(tiers):
        graduated = kind == k.GRADUATED
        fixed = (numerator if graduated else 0) + tier.flat * divisor
        row = [0] * k.TIER_COLUMNS
        row[k.LOWER], row[k.PRICE], row[k.FLAT] = tier.lower, tier.price, tier.flat
        row[k.OFFSET] = tier.lower if graduated else 0
        row[k.MAX_UNITS] = _max_units(fixed, tier.price, divisor)
        if row[k.MAX_UNITS] >= 0:
            row[k.FIXED], row[k.FIXED_REMAINDER] = divmod(fixed, divisor)
        if number + 1 < len(tiers):
            width = tiers[number + 1].lower - tier.lower
            numerator += width * tier.price + tier.flat * divisor
        rows.append(row)
    return rows


def _max_quantity(row: list[int], tiers: list[list[int]]) -> int:
    """The largest quantity such that it and every smaller one rate without overflow: how
    far a period-to-date total may grow. Exact, from the same bounds the kernel checks."""
    if row[k.MAXIMUM] != k.NO_MAXIMUM:
        return INT64_MAX  # beyond 64 bits the charge bills its maximum
    if row[k.KIND] == k.PACKAGE:
        size, blocks = row[k.PACKAGE_SIZE], row[k.MAX_BLOCKS]
        billable = blocks * size if row[k.ROUND_UP] else blocks * size + size - 1
        return min(INT64_MAX, row[k.FREE_UNITS] + billable)
    for number, tier in enumerate(tiers):
        lower = tier[k.LOWER]
        upper = tiers[number + 1][k.LOWER] if number + 1 < len(tiers) else INT64_MAX
        # A quantity in (lower, upper] fits while quantity - OFFSET <= MAX_UNITS.
        fits_to = tier[k.OFFSET] + tier[k.MAX_UNITS] if tier[k.MAX_UNITS] >= 0 else lower
        if fits_to < upper:
            return max(fits_to, lower)
    return INT64_MAX


_ROUNDINGS = {"down": k.ROUND_DOWN, "up": k.ROUND_UP_TO_WHOLE, "half_up": k.ROUND_HALF_UP}


def _metered_limit(row: list[int], converted: int) -> int:
    """The largest metered quantity whose converted quantity is at most ``converted``
    (the model's limit), capped at 64 bits; the model's limit itself without a
    conversion."""
    by = row[k.CONVERT_BY]
    if by == 0 or converted >= INT64_MAX:
        return converted
    if row[k.CONVERT_ROUNDING] == k.ROUND_DOWN:
        metered = converted * by + by - 1
    elif row[k.CONVERT_ROUNDING] == k.ROUND_UP_TO_WHOLE:
        metered = converted * by
    else:  # half up: a remainder rounds up from half the divisor on
        metered = converted * by + (by - 1) // 2
    return min(INT64_MAX, metered)


def _max_units(fixed: int, price: int, divisor: int) -> int:
    """Largest u >= 0 whose amount round_half_up((fixed + u * price) / divisor) fits in
    int64, or -1 when even u = 0 does not. Half up: floor((2x + d) / 2d) <= M holds
    exactly when 2x <= 2d(M + 1) - d - 1."""
    limit = 2 * divisor * (INT64_MAX + 1) - divisor - 1
    if 2 * fixed > limit:
        return -1
    if price == 0:
        return INT64_MAX
    return min(INT64_MAX, (limit - 2 * fixed) // (2 * price))
