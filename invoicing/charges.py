"""What one subscription owes for one period, line by line: a usage line per rated
period-to-date total (with its tiers), then, per slice of the period under one plan and
version, the plan's fixed fees prorated by day and the minimum-commitment true-up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import numpy as np

from aggregation.model import RatedTotal
from base.events import group_label
from invoicing.invoice import FIXED_FEE, TRUE_UP, USAGE, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit
from rating.period import (
    Period,
    Slice,
    commitment_true_up,
    fixed_fee_lines,
    subscription_slices,
)
from rating.plans import PriceBook
from rating.quote import TierPart, tier_parts
from rating.rater import breakdown
from rating.table import ChargeTable
from subscriptions.model import Subscription


def period_lines(
    period: date,
    sub: Subscription,
    rows: Sequence[RatedTotal],
    book: PriceBook,
    table: ChargeTable,
) -> list[InvoiceLine]:
    """``rows`` are the subscription's rated totals of the period."""
    usage = usage_lines(period, rows, book, table)
    billing = sub.period(period)
    lines = list(usage)
    in_force = subscription_slices(
        book, sub.plan, billing, sub.active_from, sub.active_until, changes=sub.changes
    )
    for part in in_force:
        fees = [
            _charge_line(
                part, period, FIXED_FEE, fee.fee, description=fee.description, amount=fee.amount
            )
            for fee in fixed_fee_lines(part, billing)
        ]
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
    return lines


def usage_lines(
    period: date, rows: Sequence[RatedTotal], book: PriceBook, table: ChargeTable
) -> list[InvoiceLine]:
    known = [table.charge_of(r.plan, r.plan_version, r.meter) for r in rows]
    priced = [index for index in known if index is not None]
    quantities = [r.quantity for r, index in zip(rows, known, strict=True) if index is not None]
    tiers = breakdown(table, np.array(priced, dtype=np.int64), np.array(quantities, np.int64))
    lines, position = [], 0
    for row, index in zip(rows, known, strict=True):
        meter = book.meter(row.meter) if _declared(book, row.meter) else None
        scale = meter.scale if meter else 0
        rated = row.amount
        parts: tuple[TierPart, ...] = ()
        if index is not None:
            parts = tier_parts(table, index, tiers.units[position], tiers.amounts[position], scale)
            parts = _with_bounds(parts, rated)
            position += 1
        group = group_label(row.group)
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


def _declared(book: PriceBook, meter: str) -> bool:
    return any(m.id == meter for m in book.meters)


def _with_bounds(parts: tuple[TierPart, ...], rated: Decimal) -> tuple[TierPart, ...]:
    """A charge's minimum or maximum moves the amount off the sum of its tiers: say so."""
    difference = rated - sum((part.amount for part in parts), Decimal(0))
    if not difference:
        return parts
    label = "the charge's minimum applies" if difference > 0 else "the charge's maximum applies"
    zero = Decimal(0)
    return (*parts, TierPart(label, zero, zero, zero, difference))


def _share(part: Slice, period: Period) -> str:
    return "" if part.days == period.days else f" ({part.days}/{period.days} days)"


def _charge_line(
    part: Slice, period: date, kind: str, item: str, *, description: str, amount: Decimal
) -> InvoiceLine:
    plan = part.plan
    return InvoiceLine(
        kind=kind, item=item, group="", plan=plan.id, plan_version=plan.version,
        applies_to=period, description=description, quantity=Decimal(0), unit="",
        currency=plan.currency, rated=amount, amount=amount,
    )  # fmt: skip
