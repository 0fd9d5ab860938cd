"""Numba-compiled rating kernels over batches of rows.

Each row is (charge index, period-to-date quantity); each charge's parameters
sit in flat arrays. Amounts are int64 nano-units. An overflow is reported by
returning the index of the first row that overflowed (-1 when none did), so
the caller can name the charge; nothing ever wraps.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INT64_MAX = np.iinfo(np.int64).max


@njit(cache=True, nogil=True)
def rate_per_unit(
    charge_index: np.ndarray,
    quantity: np.ndarray,
    unit_price_nanos: np.ndarray,
    scale_divisor: np.ndarray,
    amount_out: np.ndarray,
) -> int:
    """amount = quantity / 10**scale * unit price, rounded half up to the nano-unit."""
    for row in range(charge_index.shape[0]):
        charge = charge_index[row]
        units = quantity[row]
        price = unit_price_nanos[charge]
        if units < 0 or (price != 0 and units > INT64_MAX // price):
            return row
        product = units * price
        divisor = scale_divisor[charge]
        half = divisor // 2
        if product > INT64_MAX - half:
            return row
        amount_out[row] = (product + half) // divisor
    return -1
