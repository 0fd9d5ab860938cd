"""Discount lines: the price book's coupons a period's invoice applies, after its usage,
fees and true-ups and before tax, each as a line of its own (negative).

The declared order: coupons on one meter's usage first, then the ones on a plan's lines
(a plan's ``discounts``), then the ones on the whole period; within each, a plan's before
a subscription's, percentages before amounts, then in id order. Each takes its share of
what the ones before it left of each line (to the nano-unit, half up, as every exact
amount is kept), so discounts never take a line below zero
and never depend on anything but the period's own lines (adjustments for earlier periods
are not discounted again). A percentage takes that share of every line it covers; an
amount is prorated by the subscription's active days like a fixed fee, and taken from
the lines it covers in their order until it is used up. The discount lines are rounded
half up to the minor unit as a running total (each is the rounded total with it less the
rounded total before it), so their sum is the exact sum rounded once and never takes the
period below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from invoicing.invoice import DISCOUNT, USAGE, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import NANO, round_to_minor_unit
from rating.period import Period, Slice
from rating.plans import Coupon, PriceBook, PriceBookError
from subscriptions.model import AppliedCoupon, Subscription


@dataclass(frozen=True)
class _Applying:
    coupon: Coupon
    plan: str  # the plan whose lines it covers ("" for a subscription's coupon: every line)
    plan_version: int

    def order(self) -> tuple[int, int, int, str]:
        narrowest = 0 if self.coupon.meter else 1 if self.plan else 2
        return (narrowest, 0 if self.plan else 1, 0 if self.coupon.percent_off else 1,
                self.coupon.id)  # fmt: skip

    def covers(self, line: InvoiceLine) -> bool:
        if self.coupon.meter is not None and (line.kind != USAGE or line.item != self.coupon.meter):
            return False
        return not self.plan or (line.plan, line.plan_version) == (self.plan, self.plan_version)


def applies_in(coupon: Coupon, applied: AppliedCoupon, period: Period, anchor: int) -> bool:
    """Whether ``coupon``, taken on as ``applied``, discounts ``period``: a period that
    ends after the day it applies from, within its number of periods (the one it starts in
    is the first), starting before its ``until`` and before the day it was removed from."""
    if period.end <= applied.day:
        return False
    if coupon.periods is not None:
        first = Period.of(applied.day, anchor)
        months = (
            (period.start.year - first.start.year) * 12 + period.start.month - first.start.month
        )
        if months >= coupon.periods:
            return False
    ends = [day for day in (coupon.until, applied.ended) if day is not None]
    return all(period.start < day for day in ends)


def discount_lines(
    label: date,
    sub: Subscription,
    lines: Sequence[InvoiceLine],
    slices: Sequence[Slice],
    book: PriceBook,
) -> list[InvoiceLine]:
    """The discount lines of the subscription's period named ``label``, whose own lines
    (usage, fees, true-ups) are ``lines`` and whose plan slices are ``slices``."""
    period = sub.period(label)
    applying = [
        _Applying(book.coupon(coupon_id), part.plan.id, part.plan.version)
        for part in slices
        for coupon_id in part.plan.discounts
        if applies_in(book.coupon(coupon_id), AppliedCoupon(sub.active_from, coupon_id),
                      period, sub.anchor_day)
    ]  # fmt: skip
    for applied in sub.coupons:
        try:
            coupon = book.coupon(applied.coupon)
        except PriceBookError:
            continue  # a coupon no longer in the book discounts nothing more
        if applies_in(coupon, applied, period, sub.anchor_day):
            applying.append(_Applying(coupon, "", 0))
    if not applying:
        return []
    left = [line.amount if line.applies_to == label and line.amount > 0 else Decimal(0)
            for line in lines]  # fmt: skip
    share = Decimal(sum(part.seconds for part in slices)) / period.seconds
    found = []
    so_far = Decimal(0)  # the period's discounts so far, exact
    for discount in sorted(applying, key=_Applying.order):
        coupon = discount.coupon
        covered = [i for i, line in enumerate(lines) if left[i] and discount.covers(line)]
        currency = lines[covered[0]].currency if covered else ""
        if not covered or (coupon.currency is not None and coupon.currency != currency):
            continue
        # Each share to the nano-unit, half up, as every exact amount is kept.
        if coupon.percent_off is not None:
            taken = {i: _nanos(left[i] * coupon.percent_off / 100) for i in covered}
        else:
            assert coupon.amount_off is not None
            budget, taken = _nanos(coupon.amount_off * share), {}
            for i in covered:
                taken[i] = min(left[i], budget)
                budget -= taken[i]
        total = sum(taken.values(), Decimal(0))
        for i, amount in taken.items():
            left[i] -= amount
        if total:
            digits = MINOR_UNIT_DIGITS[currency]
            rounded = round_to_minor_unit(so_far + total, digits) - round_to_minor_unit(
                so_far, digits
            )
            so_far += total
            found.append(_line(discount, label, currency, total, rounded))
    return found


def _nanos(value: Decimal) -> Decimal:
    return value.quantize(NANO, rounding=ROUND_HALF_UP)


def _line(
    discount: _Applying, label: date, currency: str, total: Decimal, rounded: Decimal
) -> InvoiceLine:
    coupon = discount.coupon
    return InvoiceLine(
        kind=DISCOUNT, item=coupon.id, group="", plan=discount.plan,
        plan_version=discount.plan_version, applies_to=label,
        description=f"{coupon.name or coupon.id} ({coupon.terms})", quantity=Decimal(0),
        unit="", currency=currency, rated=-total, amount=-rounded,
    )  # fmt: skip
