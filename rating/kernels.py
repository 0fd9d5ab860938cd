"""Numba-compiled rating kernels over batches of rows.

Each row is (charge index, period-to-date quantity); each charge's parameters
sit in flat arrays. Amounts are int64 nano-units. An overflow is reported by
returning the index of the first row that overflowed (-1 when none did), so
the caller can name the charge; nothing ever wraps.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def rate_per_unit(
    charge_index: np.ndarray,
    quantity: np.ndarray,
    unit_price_nanos: np.ndarray,
    scale_divisor: np.ndarray,
    max_quantity: np.ndarray,
    amount_out: np.ndarray,
) -> int:
    """amount = quantity / 10**scale * unit price, rounded half up to the nano-unit.

    ``max_quantity`` is the largest quantity whose rounded product still fits in
    int64, precomputed per charge, so the overflow check is one comparison a row.
    """
    for row in range(charge_index.shape[0]):
        charge = charge_index[row]
        units = quantity[row]
        if units < 0 or units > max_quantity[charge]:
            return row
        product = units * unit_price_nanos[charge]
        divisor = scale_divisor[charge]
        if divisor == 1:
            amount_out[row] = product
        else:
            amount_out[row] = (product + divisor // 2) // divisor
    return -1
