"""A price book compiled into the two matrices the kernel indexes: one row per charge,
one row per tier. Every model is expressed as graduated tiers, volume tiers or a package."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from rating import kernels as k
from rating.money import INT64_MAX, to_nanos
from rating.plans import (
    Allowance,
    Charge,
    Graduated,
    Package,
    PerUnit,
    PriceBook,
    Tier,
    Volume,
    scaled,
)


@dataclass(frozen=True)
class ChargeRef:
    plan: str
    meter: str


@dataclass(frozen=True)
class _ScaledTier:
    lower: int  # exclusive lower bound, in scaled units
    price: int  # nano-units per whole unit
    flat: int  # nano-units


@dataclass(frozen=True)
class ChargeTable:
    refs: tuple[ChargeRef, ...]
    index: dict[tuple[str, str], int]
    charges: np.ndarray
    tiers: np.ndarray

    @classmethod
    def compile(cls, book: PriceBook) -> ChargeTable:
        refs: list[ChargeRef] = []
        charge_rows: list[list[int]] = []
        tier_rows: list[list[int]] = []
        for plan in book.plans:
            for charge in plan.charges:
                divisor = 10 ** book.meter(charge.meter).scale
                row = [0] * k.CHARGE_COLUMNS
                row[k.DIVISOR] = divisor
                row[k.MINIMUM] = to_nanos(charge.minimum) if charge.minimum is not None else 0
                row[k.MAXIMUM] = (
                    to_nanos(charge.maximum) if charge.maximum is not None else k.NO_MAXIMUM
                )
                row[k.MAX_BLOCKS] = INT64_MAX
                if isinstance(charge, Package):
                    _package(row, charge, book.meter(charge.meter).scale)
                else:
                    kind, tiers = _tiers_of(charge, book.meter(charge.meter).scale)
                    row[k.KIND] = kind
                    row[k.FIRST_TIER] = len(tier_rows)
                    row[k.TIER_COUNT] = len(tiers)
                    tier_rows.extend(_tier_rows(kind, tiers, divisor))
                refs.append(ChargeRef(plan.id, charge.meter))
                charge_rows.append(row)
        return cls(
            refs=tuple(refs),
            index={(ref.plan, ref.meter): position for position, ref in enumerate(refs)},
            charges=np.asarray(charge_rows, dtype=np.int64).reshape(-1, k.CHARGE_COLUMNS),
            tiers=np.asarray(tier_rows, dtype=np.int64).reshape(-1, k.TIER_COLUMNS),
        )

    def charge_of(self, plan: str, meter: str) -> int | None:
        return self.index.get((plan, meter))


def _package(row: list[int], charge: Package, scale: int) -> None:
    price = to_nanos(charge.package_price)
    row[k.KIND] = k.PACKAGE
    row[k.PACKAGE_SIZE] = scaled(charge.package_size, scale)
    row[k.PACKAGE_PRICE] = price
    row[k.ROUND_UP] = int(charge.rounding == "up")
    row[k.MAX_BLOCKS] = INT64_MAX // price if price else INT64_MAX


def _scale_tiers(tiers: tuple[Tier, ...], offset: int, scale: int) -> list[_ScaledTier]:
    result, lower = [], offset
    for tier in tiers:
        result.append(_ScaledTier(lower, to_nanos(tier.unit_price), to_nanos(tier.flat_fee)))
        if tier.up_to is not None:
            lower = offset + scaled(tier.up_to, scale)
    return result


def _tiers_of(charge: Charge, scale: int) -> tuple[int, list[_ScaledTier]]:
    if isinstance(charge, PerUnit):
        return k.GRADUATED, [_ScaledTier(0, to_nanos(charge.unit_price), 0)]
    if isinstance(charge, Graduated):
        return k.GRADUATED, _scale_tiers(charge.tiers, 0, scale)
    if isinstance(charge, Volume):
        return k.VOLUME, _scale_tiers(charge.tiers, 0, scale)
    assert isinstance(charge, Allowance)
    included = scaled(charge.included, scale)
    free = [_ScaledTier(0, 0, 0)] if included > 0 else []
    overage = charge.overage_tiers or (Tier(unit_price=charge.overage_price or Decimal(0)),)
    return k.GRADUATED, free + _scale_tiers(overage, included, scale)


def _tier_rows(kind: int, tiers: list[_ScaledTier], divisor: int) -> list[list[int]]:
    """Each tier with its cumulative base (graduated) and the largest units that fit."""
    rows = []
    numerator = 0  # everything below this tier, in 1/divisor nano-units
    for number, tier in enumerate(tiers):
        base = numerator if kind == k.GRADUATED else 0
        fixed = base + tier.flat * divisor
        row = [0] * k.TIER_COLUMNS
        row[k.LOWER], row[k.PRICE], row[k.FLAT] = tier.lower, tier.price, tier.flat
        row[k.MAX_UNITS] = _max_units(fixed, tier.price, divisor)
        if row[k.MAX_UNITS] >= 0:
            row[k.BASE], row[k.BASE_REMAINDER] = divmod(base, divisor)
        if number + 1 < len(tiers):
            width = tiers[number + 1].lower - tier.lower
            numerator += width * tier.price + tier.flat * divisor
        rows.append(row)
    return rows


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
