"""Price one quantity under one plan's charge (under a percentage charge, one transaction
of that amount beyond the period's free ones): the kernel's amount and its breakdown.
Behind ``meterline price``; the Decimal oracle checks both, and a disagreement is an
error rather than a wrong answer."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

from rating import oracle
from rating.money import INT64_MAX, from_nanos, plain
from rating.plans import PriceBook, decimal_places, scaled
from rating.rater import RatingOverflowError, breakdown, rate
from rating.table import ChargeTable


class QuoteError(ValueError):
    """The request cannot be priced; the message says why."""


@dataclass(frozen=True)
class TierPart:
    """One tier of a rated quantity: what it billed and at which price."""

    label: str
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal  # rounded half up to the nano-unit


@dataclass(frozen=True)
class Quote:
    plan: str
    version: int
    meter: str
    model: str
    currency: str
    quantity: Decimal
    amount: Decimal
    parts: tuple[TierPart, ...]
    adjustment: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "plan": self.plan, "version": self.version, "meter": self.meter, "model": self.model,
            "currency": self.currency, "quantity": plain(self.quantity),
            "amount": plain(self.amount), "adjustment": self.adjustment,
            "breakdown": [
                {"label": p.label, "units": plain(p.units), "unit_price": plain(p.unit_price),
                 "flat_fee": plain(p.flat_fee), "amount": plain(p.amount)}
                for p in self.parts
            ],
        }  # fmt: skip


def quote(
    book: PriceBook,
    plan_id: str,
    meter_id: str | None,
    quantity_text: str,
    version: int | None = None,
) -> Quote:
    """Price under the plan's given version, or its newest."""
    try:
        plan = book.plan(plan_id, version)
    except KeyError:
        if book.knows(plan_id):
            numbers = ", ".join(str(p.version) for p in book.versions_of(plan_id))
            raise QuoteError(f"plan {plan_id!r} has no version {version} ({numbers})") from None
        known = ", ".join(book.versions)
        raise QuoteError(f"no plan {plan_id!r} in the price book (plans: {known})") from None
    if meter_id is None:
        if not plan.charges:
            raise QuoteError(f"{plan.label} has fixed fees only: nothing to price by quantity")
        if len(plan.charges) != 1:
            meters = ", ".join(c.meter for c in plan.charges)
            raise QuoteError(
                f"plan {plan_id!r} has several charges: name one with --meter ({meters})"
            )
        meter_id = plan.charges[0].meter
    charge = plan.charge_for(meter_id)
    if charge is None:
        raise QuoteError(f"{plan.label} has no charge on meter {meter_id!r}")
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
    if units > INT64_MAX:  # the kernel's quantities are 64-bit, as an event's are
        raise QuoteError(f"quantity {quantity_text} is too large to bill: at most "
                         f"{Decimal(INT64_MAX).scaleb(-scale)} {meter_id} units")  # fmt: skip
    table = ChargeTable.compile(book)
    index = table.charge_of(plan.id, plan.version, meter_id)
    assert index is not None
    rows, quantities = np.array([index]), np.array([units])
    transactions = table.refs[index].transactions
    try:
        if transactions is not None:  # one transaction, once the free ones are used
            fee = transactions.fee(transactions.free_events or 0, transactions.free_units or 0,
                                   units)  # fmt: skip
            amount = from_nanos(int(rate(table, rows, np.array([fee]))[0]))
            parts: tuple[TierPart, ...] = (transaction_part(table, index, 1, fee),)
        else:
            amount = from_nanos(int(rate(table, rows, quantities)[0]))
            tiers = breakdown(table, rows, quantities)
            parts = tier_parts(table, index, tiers.units[0], tiers.amounts[0])
    except (RatingOverflowError, OverflowError) as error:
        raise QuoteError(str(error)) from None
    explained = oracle.rate_charge(charge, units, scale)
    if amount != explained.amount:
        raise QuoteError(
            f"the kernel ({amount}) and the Decimal oracle ({explained.amount}) disagree"
        )
    return Quote(plan.id, plan.version, meter_id, charge.model, plan.currency, quantity,
                 amount, parts, explained.adjustment)  # fmt: skip


def tier_parts(
    table: ChargeTable,
    index: int,
    tier_units: np.ndarray,
    tier_amounts: np.ndarray,
) -> tuple[TierPart, ...]:
    """The tiers one breakdown row billed, for people: units in the meter's units (blocks
    for a package, converted units for a unit conversion), prices, and amounts."""
    ref = table.refs[index]
    shift = -ref.breakdown_scale
    # Python ints, not NumPy scalars: an invoice run calls this for every usage line.
    units, amounts = tier_units.tolist(), tier_amounts.tolist()
    return tuple(
        TierPart(column.label, Decimal(units[number]).scaleb(shift), column.unit_price,
                 column.flat_fee, from_nanos(amounts[number]))
        for number, column in enumerate(ref.columns)
        if units[number] or amounts[number]
    )  # fmt: skip


def transaction_part(table: ChargeTable, index: int, events: int, fees_nanos: int) -> TierPart:
    """What a percentage charge billed: its transactions and their fees, before the
    charge's own minimum or maximum."""
    column = table.refs[index].columns[0]
    return TierPart(column.label, Decimal(events), Decimal(0), Decimal(0), from_nanos(fees_nanos))
