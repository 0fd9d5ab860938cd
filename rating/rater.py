"""Rate a batch of (charge, quantity) rows with the kernels; the only entry point callers need."""

from __future__ import annotations

import numpy as np

from rating.kernels import rate_per_unit
from rating.table import ChargeTable


class RatingOverflowError(ArithmeticError):
    """An amount does not fit in 64-bit nano-units; the message names the charge."""


def rate(table: ChargeTable, charge_index: np.ndarray, quantity: np.ndarray) -> np.ndarray:
    """Return int64 nano-unit amounts, one per row, or raise ``RatingOverflowError``."""
    charge_index = np.ascontiguousarray(charge_index, dtype=np.int64)
    quantity = np.ascontiguousarray(quantity, dtype=np.int64)
    amounts = np.empty(charge_index.shape[0], dtype=np.int64)
    failed = rate_per_unit(
        charge_index,
        quantity,
        table.unit_price_nanos,
        table.scale_divisor,
        table.max_quantity,
        amounts,
    )
    if failed >= 0:
        ref = table.refs[charge_index[failed]]
        raise RatingOverflowError(
            f"plan {ref.plan!r}, meter {ref.meter!r}: quantity {quantity[failed]} "
            "gives an amount beyond 64-bit nano-units, or is negative"
        )
    return amounts
