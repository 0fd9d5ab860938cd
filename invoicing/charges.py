"""What one subscription owes for one period, line by line: a usage line per rated
period-to-date total (with its tiers), then, per slice of the period under one plan and
version, the plan's fixed fees prorated by day and the minimum-commitment true-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

import numpy as np

from aggregation.model import RatedTotal
from aggregation.state import weighted
from base.events import group_label, millis
from invoicing.discounts import discount_lines
from invoicing.invoice import FIXED_FEE, TRUE_UP, USAGE, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit
from rating.period import (
    FeeLine,
    Period,
    PlanChanges,
    Slice,
    commitment_true_up,
    fixed_fee_lines,
    midnight,
    subscription_slices,
)
from rating.plans import Meter, PriceBook, TieredCharge
from rating.quote import TierPart, tier_parts, transaction_part
from rating.rater import breakdown, rate
from rating.table import ChargeTable
from subscriptions.model import Subscription

_Terms = tuple[str, Period, date, date | None, PlanChanges]
_Tiers = tuple[np.ndarray, np.ndarray]


@dataclass
class Pricing:
    """What composing invoices needs of a price book, made once for a run of many: the
    charge table, the meters by id, and what many subscriptions share. Most subscriptions
    of a plan were active all period with no change, so their plan slices and prorated
    fees are computed once per such terms; and a run can rate the tiers of all its totals
    in one call of the kernels (``prepare``) instead of one call per invoice."""

    book: PriceBook
    table: ChargeTable
    meters: dict[str, Meter] = field(init=False)
    _fees: dict[_Terms, list[tuple[Slice, list[FeeLine]]]] = field(default_factory=dict)
    _tiers: dict[tuple[int, int], _Tiers] = field(default_factory=dict)
    _groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meters = {meter.id: meter for meter in self.book.meters}

    @classmethod
    def of(cls, book: PriceBook) -> Pricing:
        return cls(book, ChargeTable.compile(book))

    def prepare(self, rows: Sequence[RatedTotal]) -> None:
        """Rate the tiers of ``rows`` in one call, for ``usage_lines`` to look up."""
        known = [(self.table.charge_of(r.plan, r.plan_version, r.meter), r.quantity)
                 for r in rows]  # fmt: skip
        self._rate({(c, q) for c, q in known if c is not None and (c, q) not in self._tiers
                    and self.table.refs[c].transactions is None})  # fmt: skip

    def tiers(self, charge: int, quantity: int) -> _Tiers:
        """The breakdown of one total (rated now if ``prepare`` did not see it)."""
        if (charge, quantity) not in self._tiers:
            self._rate({(charge, quantity)})
        return self._tiers[(charge, quantity)]

    def _rate(self, pairs: set[tuple[int, int]]) -> None:
        if not pairs:
            return
        ordered = sorted(pairs)
        tiers = breakdown(self.table, np.array([c for c, _ in ordered], dtype=np.int64),
                          np.array([q for _, q in ordered], dtype=np.int64))  # fmt: skip
        for row, pair in enumerate(ordered):
            self._tiers[pair] = (tiers.units[row], tiers.amounts[row])

    def fees(self, sub: Subscription, billing: Period) -> list[tuple[Slice, list[FeeLine]]]:
        """The plan slices the subscription's period falls into, each with its fees."""
        terms = (sub.plan, billing, sub.active_from, sub.active_until, sub.changes)
        found = self._fees.get(terms)
        if found is None:
            in_force = subscription_slices(self.book, sub.plan, billing, sub.active_from,
                                           sub.active_until, changes=sub.changes)  # fmt: skip
            found = self._fees[terms] = [(part, fixed_fee_lines(part, billing))
                                         for part in in_force]  # fmt: skip
        return found

    def unit_credit(self, line: InvoiceLine, units: Decimal) -> tuple[Decimal, Decimal]:
        """What the top ``units`` of a usage line are worth: the line's amount less what
        it would rate with that many fewer units, and how many of them that takes. Units
        that lower nothing (inside an allowance, a free tier) are not taken: the fewest
        that take off the same amount are. (0, 0) for a charge priced per transaction."""
        index = self.table.charge_of(line.plan, line.plan_version, line.item)
        meter = self.meters.get(line.item)
        if index is None or meter is None or self.table.refs[index].transactions is not None:
            return Decimal(0), Decimal(0)
        quantity = int(line.quantity.scaleb(meter.scale))
        asked = min(int(units.scaleb(meter.scale)), quantity)

        def rated(at: int) -> int:
            return int(rate(self.table, np.array([index]), np.array([at]))[0])

        full, floor = rated(quantity), rated(quantity - asked)
        fewest, most = 0, asked  # rated is non-decreasing: search the fewest units
        while fewest < most:
            middle = (fewest + most) // 2
            if rated(quantity - middle) == floor:
                most = middle
            else:
                fewest = middle + 1
        return Decimal(fewest).scaleb(-meter.scale), Decimal(full - floor).scaleb(-9)

    def group_label(self, key: str) -> str:
        label = self._groups.get(key)
        if label is None:
            label = self._groups[key] = group_label(key)
        return label


def period_lines(
    period: date, sub: Subscription, rows: Sequence[RatedTotal], pricing: Pricing
) -> list[InvoiceLine]:
    """``rows`` are the subscription's rated totals of the period."""
    billing = sub.period(period)
    slices = pricing.fees(sub, billing)
    held = [_held_to_slice_end(row, slices, pricing) for row in rows]
    usage = usage_lines(period, [*held, *_zero_usage(period, sub, rows, slices, pricing)], pricing)
    lines = list(usage)
    for part, fee_lines in slices:
        fees = [
            _charge_line(
                part, period, FIXED_FEE, fee.fee, description=fee.description, amount=fee.amount
            )
            for fee in fee_lines
        ]
        shortfall = Decimal(0)
        if part.plan.commitment is not None:
            billed = [
                line.amount
                for line in usage
                if (line.plan, line.plan_version) == (part.plan.id, part.plan.version)
            ]
            shortfall = commitment_true_up(part, billing, billed + [fee.amount for fee in fees])
        lines.extend(fees)
        if shortfall:
            description = "minimum commitment" + _share(part, billing)
            lines.append(
                _charge_line(
                    part, period, TRUE_UP, "commitment", description=description, amount=shortfall
                )
            )
    slices_only = [part for part, _ in slices]
    return lines + discount_lines(period, sub, lines, slices_only, pricing.book)


def _held_to_slice_end(
    row: RatedTotal, slices: list[tuple[Slice, list[FeeLine]]], pricing: Pricing
) -> RatedTotal:
    """A weighted sum's total with its last value held to the end of the slice it bills,
    as the subscription's plans and end are now; the worker held it to the end of the
    plan version's part of the period, not knowing a later plan change or end. Every
    other total as it is."""
    meter = pricing.meters.get(row.meter)
    if meter is None or meter.aggregation != "weighted_sum":
        return row
    ends = [part.end for part, _ in slices
            if (part.plan.id, part.plan.version) == (row.plan, row.plan_version)]  # fmt: skip
    index = pricing.table.charge_of(row.plan, row.plan_version, row.meter)
    if not ends or index is None:
        return row
    until = millis(midnight(ends[0]))
    integral = row.quantity if row.aggregate is None else row.aggregate
    quantity = weighted(integral, row.last_value, row.value_at, until, meter.per_ms)
    if quantity == row.quantity:
        return row
    amount = int(rate(pricing.table, np.array([index]), np.array([quantity]))[0])
    return replace(row, quantity=quantity, amount_nanos=amount)


def _zero_usage(
    period: date,
    sub: Subscription,
    rows: Sequence[RatedTotal],
    slices: list[tuple[Slice, list[FeeLine]]],
    pricing: Pricing,
) -> list[RatedTotal]:
    """A total of zero for each charge of the period's plan versions whose zero usage
    reaches its first tier (``zero_usage: first_tier``) and that no event reached: such a
    charge bills its first tier's flat fee for a period without any usage too."""
    used = {(row.plan, row.plan_version, row.meter) for row in rows}
    zeros = []
    for part, _ in slices:
        plan = part.plan
        for charge in plan.charges:
            if not (isinstance(charge, TieredCharge) and charge.bills_at_zero):
                continue
            if (plan.id, plan.version, charge.meter) in used:
                continue
            index = pricing.table.row(plan, charge.meter)
            amount = int(rate(pricing.table, np.array([index]), np.array([0]))[0])
            zeros.append(RatedTotal(sub.tenant, sub.subscription, charge.meter, "", period,
                                    plan.id, plan.version, plan.currency, 0, amount,
                                    0, 0, 0, 0))  # fmt: skip
    return zeros


def usage_lines(period: date, rows: Sequence[RatedTotal], pricing: Pricing) -> list[InvoiceLine]:
    lines = []
    for row in rows:
        meter = pricing.meters.get(row.meter)
        scale = meter.scale if meter else 0
        rated = row.amount
        parts: tuple[TierPart, ...] = ()
        index = pricing.table.charge_of(row.plan, row.plan_version, row.meter)
        if index is not None and pricing.table.refs[index].transactions is not None:
            part = transaction_part(pricing.table, index, row.events, row.fees_nanos)
            parts = _with_bounds((part,), rated)
        elif index is not None:
            units, amounts = pricing.tiers(index, row.quantity)
            parts = _with_bounds(tier_parts(pricing.table, index, units, amounts), rated)
        group = pricing.group_label(row.group)
        lines.append(
            InvoiceLine(
                kind=USAGE, item=row.meter, group=row.group, plan=row.plan,
                plan_version=row.plan_version, applies_to=period,
                description=row.meter + (f" ({group})" if group else ""),
                quantity=Decimal(row.quantity).scaleb(-scale),
                unit=meter.unit if meter else "", currency=row.currency, rated=rated,
                amount=round_to_minor_unit(rated, MINOR_UNIT_DIGITS[row.currency]),
                breakdown=parts,
            )
        )  # fmt: skip
    return lines


def _with_bounds(parts: tuple[TierPart, ...], rated: Decimal) -> tuple[TierPart, ...]:
    """A charge's minimum or maximum moves the amount off the sum of its tiers: say so."""
    difference = rated - sum((part.amount for part in parts), Decimal(0))
    if not difference:
        return parts
    label = "the charge's minimum applies" if difference > 0 else "the charge's maximum applies"
    zero = Decimal(0)
    return (*parts, TierPart(label, zero, zero, zero, difference))


def _share(part: Slice, period: Period) -> str:
    share = part.share_of(period)
    return f" ({share})" if share else ""


def _charge_line(
    part: Slice, period: date, kind: str, item: str, *, description: str, amount: Decimal
) -> InvoiceLine:
    plan = part.plan
    return InvoiceLine(
        kind=kind, item=item, group="", plan=plan.id, plan_version=plan.version,
        applies_to=period, description=description, quantity=Decimal(0), unit="",
        currency=plan.currency, rated=amount, amount=amount,
    )  # fmt: skip
