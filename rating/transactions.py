"""The rule of a ``percentage`` charge, one transaction at a time, in integers.

A percentage charge's amount is not a function of the period's volume: a fixed fee per
transaction, free events, and a minimum and maximum per transaction each depend on every
transaction. So its fees are accrued as the events are counted, in the same step that adds
each to its period-to-date total under the replay rule (``aggregation.state``): an event is
counted once whatever is replayed or repeated, and so is its fee. The rated amount of such
a total is its accrued fees, bounded by the charge's minimum and maximum; it is never
re-rated from the volume. ``oracle.transaction_fees`` writes the same rule in Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass

from rating.money import to_nanos
from rating.plans import Percentage, rate_price, scaled


@dataclass(frozen=True, slots=True)
class TransactionFees:
    """A percentage charge as the counting loop applies it, at the meter's scale."""

    price: int  # nano-units per whole unit of amount: the rate over 100
    divisor: int  # 10 ** the meter's scale
    fixed: int  # nano-units per transaction
    free_events: int | None  # the period's first transactions that are free
    free_units: int | None  # the period's first volume that is free, in scaled units
    minimum: int | None  # nano-units per transaction
    maximum: int | None
    saturates: bool  # the charge has a period maximum: accrued fees stop at 64 bits

    @classmethod
    def of(cls, charge: Percentage, scale: int) -> TransactionFees:
        def nanos(value: object) -> int | None:
            return None if value is None else to_nanos(value)  # type: ignore[arg-type]

        free = None if charge.free_units is None else scaled(charge.free_units, scale)
        return cls(
            to_nanos(rate_price(charge.rate)), 10**scale, to_nanos(charge.fixed_fee),
            charge.free_events, free, nanos(charge.per_transaction_minimum),
            nanos(charge.per_transaction_maximum), charge.maximum is not None,
        )  # fmt: skip

    def fee(self, counted: int, volume: int, amount: int) -> int:
        """The fee in nano-units of a transaction of ``amount`` (scaled), after ``counted``
        transactions of ``volume`` in its period. A transaction is free while the free
        allowance lasts: among the first ``free_events`` and ending within the first
        ``free_units`` (where set). The one that crosses the free volume pays the rate on
        its part beyond it, and the fixed fee; every transaction not free pays
        rate × its billable part + the fixed fee, bounded per transaction."""
        free_left = 0  # of volume; -1: the whole transaction, by count alone
        has_allowance = self.free_events is not None or self.free_units is not None
        if has_allowance and (self.free_events is None or counted < self.free_events):
            free_left = -1 if self.free_units is None else max(0, self.free_units - volume)
        if free_left < 0 or (free_left > 0 and amount <= free_left):
            return 0
        billable = amount - min(amount, free_left)
        # Half up: floor((2x + d) / 2d) for x / d, with x = billable * price.
        fee = (2 * billable * self.price + self.divisor) // (2 * self.divisor) + self.fixed
        if self.minimum is not None:
            fee = max(fee, self.minimum)
        if self.maximum is not None:
            fee = min(fee, self.maximum)
        return fee
