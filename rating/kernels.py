"""The Numba rating kernel: one pass over a batch of (charge index, quantity) rows.

Every price model compiles to one of three shapes (see ``rating.table``):
graduated tiers (per-unit and included-allowance charges are graduated tiers
too), volume tiers, and packages. Amounts are int64 nano-units, rounded half
up once per amount. Exactness without 128-bit integers: for a quantity q at
scale divisor d and a price p in nano-units per unit,

    q * p / d  =  (q // d) * p  +  (q % d) * (p // d)  +  (q % d) * (p % d) / d

where every term fits in int64 whenever the result does, and the last term's
remainder carries the rounding. Each tier stores the largest quantity whose
amount still fits, so the overflow check is one comparison per row. An overflow
returns the row's index (or, for a charge with a maximum, bills the maximum);
nothing wraps.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Columns of the per-charge parameter matrix.
KIND, DIVISOR, FIRST_TIER, TIER_COUNT, PACKAGE_SIZE, PACKAGE_PRICE, ROUND_UP, MAX_BLOCKS = range(8)
MINIMUM, MAXIMUM = 8, 9
CHARGE_COLUMNS = 10
# Columns of the per-tier parameter matrix.
LOWER, PRICE, FLAT, BASE, BASE_REMAINDER, MAX_UNITS = range(6)
TIER_COLUMNS = 6

GRADUATED, VOLUME, PACKAGE = 0, 1, 2
NO_MAXIMUM = -1


@njit(cache=True, nogil=True, inline="always")
def _scaled_product(units: int, price: int, divisor: int) -> tuple[int, int]:
    """(whole nano-units, remainder in 1/divisor nano-units) of units * price / divisor."""
    low_units = units % divisor
    low_product = low_units * (price % divisor)
    whole = (units // divisor) * price + low_units * (price // divisor) + low_product // divisor
    return whole, low_product % divisor


@njit(cache=True, nogil=True)
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
        kind = charges[charge, KIND]
        divisor = charges[charge, DIVISOR]
        maximum = charges[charge, MAXIMUM]
        overflow = False
        amount = 0
        if kind == PACKAGE:
            size = charges[charge, PACKAGE_SIZE]
            blocks = units // size
            if charges[charge, ROUND_UP] == 1 and units % size != 0:
                blocks += 1
            if blocks > charges[charge, MAX_BLOCKS]:
                overflow = True
            else:
                amount = blocks * charges[charge, PACKAGE_PRICE]
        elif units > 0:
            # The tier is the number of lower bounds below the quantity (a boundary belongs
            # to the lower tier); counting them has no branch to mispredict on random usage.
            first = charges[charge, FIRST_TIER]
            tier = first
            for candidate in range(first + 1, first + charges[charge, TIER_COUNT]):
                tier += tiers[candidate, LOWER] < units
            in_tier = units - tiers[tier, LOWER] if kind == GRADUATED else units
            if in_tier > tiers[tier, MAX_UNITS]:
                overflow = True
            elif divisor == 1:  # whole units: no remainder to carry (BASE_REMAINDER is 0)
                amount = in_tier * tiers[tier, PRICE] + tiers[tier, FLAT]
                if kind == GRADUATED:
                    amount += tiers[tier, BASE]
            else:
                whole, remainder = _scaled_product(in_tier, tiers[tier, PRICE], divisor)
                whole += tiers[tier, FLAT]
                if kind == GRADUATED:
                    whole += tiers[tier, BASE]
                    remainder += tiers[tier, BASE_REMAINDER]
                whole += remainder // divisor
                remainder = remainder % divisor
                amount = whole + (1 if 2 * remainder >= divisor else 0)
        if overflow:
            if maximum == NO_MAXIMUM:
                return row
            amount = maximum
        amount = max(amount, charges[charge, MINIMUM])
        if maximum != NO_MAXIMUM:
            amount = min(amount, maximum)
        amount_out[row] = amount
    return -1
