"""Price one quantity under one plan's charge: the kernel's amount, explained tier by tier
by the oracle. Behind ``meterline price``; the two must agree or it is an error."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

from rating import oracle
from rating.money import from_nanos
from rating.plans import PriceBook, decimal_places, scaled
from rating.rater import RatingOverflowError, rate
from rating.table import ChargeTable


class QuoteError(ValueError):
    """The request cannot be priced; the message says why."""


@dataclass(frozen=True)
class Quote:
    plan: str
    meter: str
    model: str
    currency: str
    quantity: Decimal
    amount: Decimal
    parts: tuple[oracle.Part, ...]
    adjustment: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "plan": self.plan, "meter": self.meter, "model": self.model,
            "currency": self.currency, "quantity": str(self.quantity),
            "amount": str(self.amount), "adjustment": self.adjustment,
            "breakdown": [
                {"label": p.label, "units": str(p.units), "unit_price": str(p.unit_price),
                 "flat_fee": str(p.flat_fee), "amount": str(p.amount)}
                for p in self.parts
            ],
        }  # fmt: skip


def quote(book: PriceBook, plan_id: str, meter_id: str | None, quantity_text: str) -> Quote:
    try:
        plan = book.plan(plan_id)
    except KeyError:
        known = ", ".join(p.id for p in book.plans)
        raise QuoteError(f"no plan {plan_id!r} in the price book (plans: {known})") from None
    if meter_id is None:
        if len(plan.charges) != 1:
            meters = ", ".join(c.meter for c in plan.charges)
            raise QuoteError(
                f"plan {plan_id!r} has several charges: name one with --meter ({meters})"
            )
        meter_id = plan.charges[0].meter
    charge = plan.charge_for(meter_id)
    if charge is None:
        raise QuoteError(f"plan {plan_id!r} has no charge on meter {meter_id!r}")
    scale = book.meter(meter_id).scale
    try:
        quantity = Decimal(quantity_text)
    except InvalidOperation:
        raise QuoteError(f"quantity {quantity_text!r} is not a number") from None
    if not quantity.is_finite() or quantity < 0:
        raise QuoteError(f"quantity {quantity_text!r} must be a finite number, zero or more")
    if decimal_places(quantity) > scale:
        raise QuoteError(
            f"meter {meter_id!r} counts to {scale} decimal places; got {quantity_text}"
        )
    units = scaled(quantity, scale)
    table = ChargeTable.compile(book)
    index = table.charge_of(plan_id, meter_id)
    assert index is not None
    try:
        amounts = rate(table, np.array([index]), np.array([units]))
    except (RatingOverflowError, OverflowError) as error:
        raise QuoteError(str(error)) from None
    explained = oracle.rate_charge(charge, units, scale)
    amount = from_nanos(int(amounts[0]))
    if amount != explained.amount:
        raise QuoteError(
            f"the kernel ({amount}) and the Decimal oracle ({explained.amount}) disagree"
        )
    return Quote(plan_id, meter_id, charge.model, plan.currency, quantity, amount,
                 explained.parts, explained.adjustment)  # fmt: skip
