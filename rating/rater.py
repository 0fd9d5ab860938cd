"""Rate a batch of (charge, quantity) rows with the kernel; the only entry point callers need."""

from __future__ import annotations

import numpy as np

from rating.kernels import rate_batch
from rating.table import ChargeTable


class RatingOverflowError(ArithmeticError):
    """A row cannot be billed: its amount does not fit in 64-bit nano-units, or its
    quantity is negative. The message names the charge."""


def rate(table: ChargeTable, charge_index: np.ndarray, quantity: np.ndarray) -> np.ndarray:
    """Return int64 nano-unit amounts, one per row, or raise ``RatingOverflowError``."""
    charge_index = np.ascontiguousarray(charge_index, dtype=np.int64)
    quantity = np.ascontiguousarray(quantity, dtype=np.int64)
    amounts = np.empty(charge_index.shape[0], dtype=np.int64)
    failed = rate_batch(charge_index, quantity, table.charges, table.tiers, amounts)
    if failed >= 0:
        ref = table.refs[charge_index[failed]]
        raise RatingOverflowError(
            f"plan {ref.plan!r}, meter {ref.meter!r}: quantity {quantity[failed]} "
            "gives an amount beyond 64-bit nano-units, or is negative"
        )
    return amounts
