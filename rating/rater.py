"""Rate a batch of (charge, quantity) rows with the kernels; the only entry point callers need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rating import kernels
from rating.kernels import TIER_COUNT
from rating.table import ChargeTable

# Up to this many rows a call runs the kernels as plain Python (``kernels``): a few
# microseconds a row, against a quarter of a second to load the compiled form into a
# process that has not used it yet. A process that goes on rating (an invoice run calls
# once per invoice) loads it once it has interpreted INTERPRETED_BUDGET rows in all.
INTERPRETED_ROWS = 8
INTERPRETED_BUDGET = 2_000


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


class _Forms:
    interpreted_rows = 0  # so far, in this process


def _form(rows: int, compiled: bool | None) -> Any:
    """The kernels to rate ``rows`` rows with: as asked, or else the interpreted ones for
    a handful while the process has not rated many."""
    if compiled is not None:
        return kernels.compiled() if compiled else kernels
    if rows <= INTERPRETED_ROWS and _Forms.interpreted_rows < INTERPRETED_BUDGET:
        _Forms.interpreted_rows += rows
        return kernels
    return kernels.compiled()


def rate(
    table: ChargeTable,
    charge_index: np.ndarray,
    quantity: np.ndarray,
    *,
    compiled: bool | None = None,
) -> np.ndarray:
    """Return int64 nano-unit amounts, one per row, or raise ``RatingOverflowError``.
    ``compiled`` forces a form of the kernels (the tests compare them); by default the
    rater picks (``INTERPRETED_ROWS``)."""
    charge_index, quantity = _rows(charge_index, quantity)
    amounts = np.empty(charge_index.shape[0], dtype=np.int64)
    kernel = _form(len(amounts), compiled).rate_batch
    failed = kernel(charge_index, quantity, table.charges, table.tiers, amounts)
    if failed >= 0:
        raise _overflow(table, int(charge_index[failed]), int(quantity[failed]))
    return amounts


def breakdown(
    table: ChargeTable,
    charge_index: np.ndarray,
    quantity: np.ndarray,
    *,
    compiled: bool | None = None,
) -> Breakdown:
    """The per-tier units and amounts an invoice line shows; raises and picks the kernels'
    form like ``rate``."""
    charge_index, quantity = _rows(charge_index, quantity)
    width = max(1, int(table.charges[:, TIER_COUNT].max(initial=1)))
    units = np.zeros((charge_index.shape[0], width), dtype=np.int64)
    amounts = np.zeros_like(units)
    kernel = _form(len(units), compiled).breakdown_batch
    failed = kernel(charge_index, quantity, table.charges, table.tiers, units, amounts)
    if failed >= 0:
        raise _overflow(table, int(charge_index[failed]), int(quantity[failed]))
    return Breakdown(units, amounts)
