"""Rate a batch of (charge, quantity) rows with the kernels; the only entry point callers need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rating import kernels
from rating.kernels import TIER_COUNT
from rating.table import ChargeTable

# Up to this many rows the kernels run as plain Python (``kernels``): a few microseconds a
# row, against a quarter of a second to load the compiled form into a process that has
# not yet used it. A worker's or an invoice run's batches are larger, and compile once.
INTERPRETED_ROWS = 8


class RatingOverflowError(ArithmeticError):
    """A row cannot be billed: its amount does not fit in 64-bit nano-units, or its
    quantity is negative. The message names the charge."""


@dataclass(frozen=True)
class Breakdown:
    """Per row and per tier of the row's charge (column j is tier j): the units billed in
    the tier, at the meter's scale (a package's column 0 counts blocks), and the tier's
    amount in nano-units before the charge's minimum or maximum."""

    units: np.ndarray
    amounts: np.ndarray


def _rows(charge_index: np.ndarray, quantity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(charge_index, dtype=np.int64),
        np.ascontiguousarray(quantity, dtype=np.int64),
    )


def _overflow(table: ChargeTable, charge: int, quantity: int) -> RatingOverflowError:
    ref = table.refs[charge]
    return RatingOverflowError(
        f"plan {ref.plan!r} (version {ref.version}), meter {ref.meter!r}: quantity {quantity} "
        "gives an amount beyond 64-bit nano-units, or is negative"
    )


def _form(rows: int) -> Any:
    """The kernels to rate ``rows`` rows with: the interpreted ones for a handful."""
    return kernels if rows <= INTERPRETED_ROWS else kernels.compiled()


def rate(table: ChargeTable, charge_index: np.ndarray, quantity: np.ndarray) -> np.ndarray:
    """Return int64 nano-unit amounts, one per row, or raise ``RatingOverflowError``."""
    charge_index, quantity = _rows(charge_index, quantity)
    amounts = np.empty(charge_index.shape[0], dtype=np.int64)
    kernel = _form(len(amounts)).rate_batch
    failed = kernel(charge_index, quantity, table.charges, table.tiers, amounts)
    if failed >= 0:
        raise _overflow(table, int(charge_index[failed]), int(quantity[failed]))
    return amounts


def breakdown(table: ChargeTable, charge_index: np.ndarray, quantity: np.ndarray) -> Breakdown:
    """The per-tier units and amounts an invoice line shows; raises like ``rate``."""
    charge_index, quantity = _rows(charge_index, quantity)
    width = max(1, int(table.charges[:, TIER_COUNT].max(initial=1)))
    units = np.zeros((charge_index.shape[0], width), dtype=np.int64)
    amounts = np.zeros_like(units)
    kernel = _form(len(units)).breakdown_batch
    failed = kernel(charge_index, quantity, table.charges, table.tiers, units, amounts)
    if failed >= 0:
        raise _overflow(table, int(charge_index[failed]), int(quantity[failed]))
    return Breakdown(units, amounts)
