"""The Numba rating kernels: one pass over a batch of (charge index, quantity) rows.

Every price model compiles to one of three shapes (see ``rating.table``):
graduated tiers (per-unit and included-allowance charges are graduated tiers
too), volume tiers, and packages, or else to fees accrued per transaction as the
events are counted (``rating.transactions``), which the kernel only bounds; a
unit conversion divides a row's quantity, rounded to whole units, before its
shape prices it. Amounts are int64 nano-units, rounded half
up once per amount. Exactness without 128-bit integers: for a quantity q at
scale divisor d and a price p in nano-units per unit,

    q * p / d  =  (q // d) * p  +  (q % d) * (p // d)  +  (q % d) * (p % d) / d

where every term fits in int64 whenever the result does, and the last term's
remainder carries the rounding. Each tier stores the largest quantity whose
amount still fits, so the overflow check is one comparison per row. An overflow
returns the row's index (or, for a charge with a maximum, bills the maximum);
nothing wraps.

The functions here are plain Python; ``compiled()`` gives their Numba form. A process
that rates a handful of rows (``meterline price``, a quote) runs them as they are and
never imports Numba: loading the compiled kernels, even from Numba's on-disk cache,
costs a quarter of a second, rating one row by the interpreter microseconds. Both forms
run the same source, and the tests hold them to the same amounts.

Graduated and volume tiers share one formula, ``(q - OFFSET) * PRICE + FIXED``:
a graduated tier's OFFSET is its lower bound and its FIXED holds everything
billed below it, while a volume tier's OFFSET is zero. So the rating loop has
one multiplication per row whatever the number of tiers.
"""

from __future__ import annotations

from functools import cache
from types import FunctionType, SimpleNamespace

import numpy as np

# Columns of the per-charge parameter matrix.
KIND, DIVISOR, FIRST_TIER, TIER_COUNT, PACKAGE_SIZE, PACKAGE_PRICE, ROUND_UP, MAX_BLOCKS = range(8)
MINIMUM, MAXIMUM = 8, 9
FREE_UNITS = 10  # a package's units before its first block
# A unit conversion: the divisor in the meter's scaled units (0: none), and its rounding.
CONVERT_BY, CONVERT_ROUNDING = 11, 12
ZERO_TIER = 13  # 1: zero usage reaches the first tier (and bills its flat fee); 0: none
CHARGE_COLUMNS = 14
# Columns of the per-tier parameter matrix.
LOWER, OFFSET, PRICE, FLAT, FIXED, FIXED_REMAINDER, MAX_UNITS = range(7)
TIER_COLUMNS = 7

GRADUATED, VOLUME, PACKAGE = 0, 1, 2
# Fees accrued transaction by transaction (``rating.transactions``): a row's quantity is
# the period's accrued fees in nano-units, and its amount is that, bounded.
ACCRUED = 3
NO_MAXIMUM = -1
ROUND_DOWN, ROUND_UP_TO_WHOLE, ROUND_HALF_UP = 1, 2, 3


def _scaled_product(units: int, price: int, divisor: int) -> tuple[int, int]:
    """(whole nano-units, remainder in 1/divisor nano-units) of units * price / divisor."""
    low_units = units % divisor
    low_product = low_units * (price % divisor)
    whole = (units // divisor) * price + low_units * (price // divisor) + low_product // divisor
    return whole, low_product % divisor


def _half_up(whole: int, remainder: int, divisor: int) -> int:
    """whole + remainder / divisor rounded half up, for 0 <= remainder < 2 * divisor."""
    whole += remainder // divisor
    return whole + (1 if 2 * (remainder % divisor) >= divisor else 0)


def _converted(charges: np.ndarray, charge: int, units: int) -> int:
    """The quantity the charge's model prices: as metered, or divided by its unit
    conversion and rounded to whole units."""
    by = charges[charge, CONVERT_BY]
    if by == 0:
        return units
    whole, remainder = units // by, units % by
    rounding = charges[charge, CONVERT_ROUNDING]
    if rounding == ROUND_UP_TO_WHOLE:
        return int(whole + (remainder > 0))
    # Half up compares the remainder with what is left of the divisor: no 2 * remainder
    # to overflow.
    return int(whole + (rounding == ROUND_HALF_UP and remainder >= by - remainder))


def _package_blocks(charges: np.ndarray, charge: int, units: int) -> int:
    """The blocks a package bills: of the units beyond its free ones, rounded its way."""
    units = max(units - charges[charge, FREE_UNITS], 0)
    size = charges[charge, PACKAGE_SIZE]
    blocks = units // size
    if charges[charge, ROUND_UP] == 1 and units % size != 0:
        blocks += 1
    return int(blocks)


def _tier_of(charges: np.ndarray, tiers: np.ndarray, charge: int, units: int) -> int:
    """The tier a positive quantity reaches: the number of lower bounds below it (a
    boundary belongs to the lower tier). Counting has no branch to mispredict."""
    first = charges[charge, FIRST_TIER]
    tier = first
    for candidate in range(first + 1, first + charges[charge, TIER_COUNT]):
        tier += tiers[candidate, LOWER] < units
    return int(tier)


def rate_batch(
    charge_index: np.ndarray,
    quantity: np.ndarray,
    charges: np.ndarray,
    tiers: np.ndarray,
    amount_out: np.ndarray,
) -> int:
    """Fill ``amount_out``; return -1, or the index of the first row that cannot be billed."""
    for row in range(charge_index.shape[0]):
        charge = charge_index[row]
        units = quantity[row]
        if units < 0:
            return row
        units = _converted(charges, charge, units)
        divisor = charges[charge, DIVISOR]
        maximum = charges[charge, MAXIMUM]
        overflow = False
        amount = 0
        if charges[charge, KIND] == ACCRUED:
            amount = units
        elif charges[charge, KIND] == PACKAGE:
            blocks = _package_blocks(charges, charge, units)
            if blocks > charges[charge, MAX_BLOCKS]:
                overflow = True
            else:
                amount = blocks * charges[charge, PACKAGE_PRICE]
        elif units > 0 or charges[charge, ZERO_TIER]:
            tier = _tier_of(charges, tiers, charge, units)
            in_tier = units - tiers[tier, OFFSET]
            if in_tier > tiers[tier, MAX_UNITS]:
                overflow = True
            elif divisor == 1:  # whole units: no remainder to carry
                amount = in_tier * tiers[tier, PRICE] + tiers[tier, FIXED]
            else:
                whole, remainder = _scaled_product(in_tier, tiers[tier, PRICE], divisor)
                amount = _half_up(
                    whole + tiers[tier, FIXED], remainder + tiers[tier, FIXED_REMAINDER], divisor
                )
        if overflow:
            if maximum == NO_MAXIMUM:
                return row
            amount = maximum
        amount = max(amount, charges[charge, MINIMUM])
        if maximum != NO_MAXIMUM:
            amount = min(amount, maximum)
        amount_out[row] = amount
    return -1


def breakdown_batch(
    charge_index: np.ndarray,
    quantity: np.ndarray,
    charges: np.ndarray,
    tiers: np.ndarray,
    units_out: np.ndarray,
    amount_out: np.ndarray,
) -> int:
    """Fill, per row, the units and amount of each of the charge's tiers (column j is the
    charge's tier j; a package has one column, its blocks), before any minimum or maximum.
    ``units_out`` and ``amount_out`` must be zeroed. Each tier amount is rounded half up
    on its own. Returns -1, or the index of the first row whose amount does not fit."""
    for row in range(charge_index.shape[0]):
        charge = charge_index[row]
        units = quantity[row]
        if units < 0:
            return row
        units = _converted(charges, charge, units)
        if charges[charge, KIND] == ACCRUED:
            amount_out[row, 0] = units
            continue
        if charges[charge, KIND] == PACKAGE:
            blocks = _package_blocks(charges, charge, units)
            if blocks > charges[charge, MAX_BLOCKS]:
                return row
            units_out[row, 0] = blocks
            amount_out[row, 0] = blocks * charges[charge, PACKAGE_PRICE]
            continue
        if units == 0 and not charges[charge, ZERO_TIER]:
            continue
        divisor = charges[charge, DIVISOR]
        first = charges[charge, FIRST_TIER]
        reached = _tier_of(charges, tiers, charge, units)
        if units - tiers[reached, OFFSET] > tiers[reached, MAX_UNITS]:
            return row
        lowest = first if charges[charge, KIND] == GRADUATED else reached
        for tier in range(lowest, reached + 1):
            upper = tiers[tier + 1, LOWER] if tier < reached else units
            in_tier = upper - tiers[tier, OFFSET]
            whole, remainder = _scaled_product(in_tier, tiers[tier, PRICE], divisor)
            units_out[row, tier - first] = in_tier
            amount_out[row, tier - first] = _half_up(whole, remainder, divisor) + tiers[tier, FLAT]
    return -1


# Helpers are inlined into the batch loops; the loops release the GIL.
_HELPERS = (_scaled_product, _half_up, _converted, _package_blocks, _tier_of)
_BATCHES = (rate_batch, breakdown_batch)


@cache
def compiled() -> SimpleNamespace:
    """The kernels compiled by Numba (cached on disk beside this file, or in the user's
    cache directory when this one is read-only), as ``rate_batch`` and ``breakdown_batch``.

    Each function is rebuilt over a namespace of its own in which every kernel name
    refers to the compiled form: Numba resolves a function's globals when it compiles it,
    and a compiled loop can only call compiled helpers."""
    from numba import njit  # noqa: PLC0415 (the import is what costs)

    namespace = dict(globals())
    for function in (*_HELPERS, *_BATCHES):
        rebuilt = FunctionType(function.__code__, namespace, function.__name__)
        rebuilt.__qualname__, rebuilt.__doc__ = function.__qualname__, function.__doc__
        if function in _HELPERS:
            namespace[function.__name__] = njit(cache=True, nogil=True, inline="always")(rebuilt)
        else:
            namespace[function.__name__] = njit(cache=True, nogil=True)(rebuilt)
    return SimpleNamespace(rate_batch=namespace["rate_batch"],
                           breakdown_batch=namespace["breakdown_batch"])  # fmt: skip
