"""What a billing period owes besides usage: each slice of the period under one plan
version, recurring fixed fees prorated by day, and the minimum-commitment true-up.

Pure integer arithmetic on nano-units: a prorated amount is the exact rational
``amount * days / period_days``, rounded once, half up, to the currency's minor unit,
which is the declared rule for every invoice line.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from rating.money import NANO_DIGITS, to_nanos
from rating.plans import Plan, PriceBook

# The last day the store can hold: every period boundary is a ClickHouse Date, whose range
# ends here. Days after it are refused where they come in, never wrapped on the way out.
LAST_DAY = date(2149, 6, 6)

MAX_ANCHOR = 28  # every month has the day, so a period always starts on its anchor day


@dataclass(frozen=True)
class Period:
    """A billing period, [start, end) in UTC days: a month from ``start``, to the same day
    of the next month. A subscription's periods start on its anchor day (1: calendar
    months). A period is named by its ``label``, the first of the month it starts in:
    rated totals and invoices are keyed by it, so "2026-10" is the period that starts in
    October, whatever the anchor."""

    start: date

    @classmethod
    def of(cls, day: date, anchor: int = 1) -> Period:
        """The period a day belongs to, for periods starting on day ``anchor``."""
        if day.day >= anchor:
            return cls(day.replace(day=anchor))
        return cls(day.replace(day=anchor)).shifted(-1)

    @classmethod
    def labelled(cls, label: date, anchor: int = 1) -> Period:
        """The period named ``label`` (a month) for periods starting on day ``anchor``."""
        return cls(label.replace(day=anchor))

    @property
    def label(self) -> date:
        return self.start.replace(day=1)

    @property
    def end(self) -> date:
        return self.shifted(1).start

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def shifted(self, months: int) -> Period:
        """The period ``months`` later (earlier when negative)."""
        index = self.start.year * 12 + self.start.month - 1 + months
        return Period(date(index // 12, index % 12 + 1, self.start.day))


@dataclass(frozen=True)
class Slice:
    """Days [start, end) of a period during which one plan version was in force."""

    plan: Plan
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def slices(
    book: PriceBook,
    plan_id: str,
    period: Period,
    active_from: date,
    active_until: date | None = None,
) -> list[Slice]:
    """The slices of ``period`` in which a subscription on ``plan_id`` is active (from
    ``active_from``, until ``active_until`` exclusive), cut where a version takes effect."""
    start = max(period.start, active_from)
    end = min(period.end, active_until) if active_until is not None else period.end
    if start >= end:
        return []
    cuts = sorted(
        {start, end}
        | {
            plan.effective_from
            for plan in book.versions_of(plan_id)
            if plan.effective_from is not None and start < plan.effective_from < end
        }
    )
    found = []
    for begin, finish in itertools.pairwise(cuts):
        plan = book.plan_at(plan_id, begin)
        if plan is not None:
            found.append(Slice(plan, begin, finish))
    return found


PlanChanges = tuple[tuple[date, str], ...]  # (first day on the plan, plan id), in day order


def plan_on(plan: str, changes: PlanChanges, day: date) -> str:
    """The plan a subscription that started on ``plan`` is on during ``day``."""
    for first_day, changed_to in changes:
        if first_day > day:
            break
        plan = changed_to
    return plan


def subscription_slices(
    book: PriceBook,
    plan_id: str,
    period: Period,
    active_from: date,
    active_until: date | None = None,
    *,
    changes: PlanChanges = (),
) -> list[Slice]:
    """``slices`` of each plan a subscription is on during the period, in day order: it
    started on ``plan_id`` and changed plan on the days in ``changes``."""
    starts = [(active_from, plan_on(plan_id, changes, active_from))]
    starts += [(day, plan) for day, plan in changes if day > active_from]
    ends = [day for day, _ in starts[1:]] + [active_until]
    return [
        part
        for (start, plan), end in zip(starts, ends, strict=True)
        if end is None or start < end
        for part in slices(book, plan, period, start, end)
    ]


def prorate(amount: Decimal, days: int, period_days: int, minor_digits: int) -> Decimal:
    """``amount * days / period_days`` rounded half up to ``minor_digits`` decimals, exactly."""
    numerator = to_nanos(amount) * days * 10**minor_digits
    denominator = period_days * 10**NANO_DIGITS
    whole, remainder = divmod(numerator, denominator)
    if 2 * remainder >= denominator:
        whole += 1
    return Decimal(whole).scaleb(-minor_digits)


@dataclass(frozen=True)
class FeeLine:
    fee: str
    description: str
    amount: Decimal  # rounded to the minor unit


def fixed_fee_lines(part: Slice, period: Period) -> list[FeeLine]:
    """The plan's recurring fees for the slice, prorated by its share of the period's days."""
    plan = part.plan
    share = "" if part.days == period.days else f" ({part.days}/{period.days} days)"
    return [
        FeeLine(
            fee.id,
            f"{fee.name or fee.id}{share}",
            prorate(fee.amount, part.days, period.days, plan.minor_digits),
        )
        for fee in plan.fixed_fees
    ]


def commitment_true_up(part: Slice, period: Period, billed: Sequence[Decimal]) -> Decimal:
    """What is missing to reach the plan's minimum commitment (prorated to the slice) once
    the slice's rounded lines are summed; zero when there is no commitment or it is met."""
    if part.plan.commitment is None:
        return Decimal(0)
    committed = prorate(part.plan.commitment, part.days, period.days, part.plan.minor_digits)
    return max(Decimal(0), committed - sum(billed, Decimal(0)))
