"""What a billing period owes besides usage: each slice of the period under one plan
version, recurring fixed fees prorated by the second, and the minimum-commitment true-up.

Pure integer arithmetic on nano-units: a prorated amount is the exact rational
``amount * seconds / period_seconds``, rounded once, half up, to the currency's minor
unit, which is the declared rule for every invoice line. A slice of whole days is prorated
exactly as by day (days/period_days is the same fraction), so only a change made at an
instant (an immediate upgrade) gives a fraction of a day.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from rating.money import NANO_DIGITS, to_nanos
from rating.plans import Plan, PriceBook

# The last day the store can hold: every period boundary is a ClickHouse Date, whose range
# ends here. Days after it are refused where they come in, never wrapped on the way out.
LAST_DAY = date(2149, 6, 6)

MAX_ANCHOR = 28  # every month has the day, so a period always starts on its anchor day
DAY_SECONDS = 86_400


def midnight(day: date) -> datetime:
    """The start of a UTC day: where a change made for a day takes effect."""
    return datetime.combine(day, time(), tzinfo=UTC)


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

    @property
    def seconds(self) -> int:
        return self.days * DAY_SECONDS

    def shifted(self, months: int) -> Period:
        """The period ``months`` later (earlier when negative)."""
        index = self.start.year * 12 + self.start.month - 1 + months
        return Period(date(index // 12, index % 12 + 1, self.start.day))


@dataclass(frozen=True)
class Slice:
    """Days [start, end) of a period during which one plan version was in force; when a
    change took effect at an instant, the slice begins at ``starts_at`` within its first
    day, or ends at ``ends_at`` within its last (``end`` is then the day after it)."""

    plan: Plan
    start: date
    end: date
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    @property
    def seconds(self) -> int:
        began = self.starts_at or midnight(self.start)
        return int(((self.ends_at or midnight(self.end)) - began).total_seconds())

    @property
    def days(self) -> int:
        """Its whole days (a slice cut at an instant: its length rounded down to days)."""
        return self.seconds // DAY_SECONDS

    def share_of(self, period: Period) -> str:
        """Its share of the period as an invoice line says it: "" for all of it, else
        "12/30 days", or "11.4167/31 days" for a slice cut at an instant."""
        if self.seconds == period.seconds:
            return ""
        if self.seconds % DAY_SECONDS == 0:
            return f"{self.days}/{period.days} days"
        exact = (Decimal(self.seconds) / DAY_SECONDS).quantize(Decimal("0.0001"))
        return f"{exact.normalize():f}/{period.days} days"


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


# (when it takes effect, plan id), in time order: a change made for a day takes effect at
# its midnight (UTC), an immediate one at the second it was made.
PlanChanges = tuple[tuple[datetime, str], ...]


def plan_at(plan: str, changes: PlanChanges, moment: datetime) -> str:
    """The plan a subscription that started on ``plan`` is on at ``moment``."""
    for effective, changed_to in changes:
        if effective > moment:
            break
        plan = changed_to
    return plan


def plan_on(plan: str, changes: PlanChanges, day: date) -> str:
    """The plan a subscription that started on ``plan`` is on as ``day`` begins."""
    return plan_at(plan, changes, midnight(day)) if changes else plan


def subscription_slices(
    book: PriceBook,
    plan_id: str,
    period: Period,
    active_from: date,
    active_until: date | None = None,
    *,
    changes: PlanChanges = (),
) -> list[Slice]:
    """``slices`` of each plan a subscription is on during the period, in time order: it
    started on ``plan_id`` and changed plan at the moments in ``changes``; a slice that
    begins or ends at an instant within a day says so (``Slice.starts_at``, ``ends_at``)."""
    began = midnight(active_from)
    starts = [(began, plan_on(plan_id, changes, active_from))]
    starts += [(moment, plan) for moment, plan in changes if moment > began]
    ends = [moment for moment, _ in starts[1:]] + [
        midnight(active_until) if active_until is not None else None
    ]
    found = []
    for (start, plan), end in zip(starts, ends, strict=True):
        if end is not None and start >= end:
            continue
        first = start.date()
        last = None if end is None else (end.date() if end.time() == time() else
                                         end.date() + timedelta(days=1))  # fmt: skip
        for part in slices(book, plan, period, first, last):
            cut_in = start if start.time() != time() and part.start == first else None
            cut_out = end if end is not None and end.time() != time() and part.end == last else None
            found.append(replace(part, starts_at=cut_in, ends_at=cut_out))
    return found


def prorate(amount: Decimal, part: int, whole: int, minor_digits: int) -> Decimal:
    """``amount * part / whole`` (days, or seconds, of a period) rounded half up to
    ``minor_digits`` decimals, exactly."""
    numerator = to_nanos(amount) * part * 10**minor_digits
    denominator = whole * 10**NANO_DIGITS
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
    """The plan's recurring fees for the slice, prorated by its share of the period's
    seconds."""
    plan = part.plan
    share = part.share_of(period)
    return [
        FeeLine(
            fee.id,
            f"{fee.name or fee.id}" + (f" ({share})" if share else ""),
            prorate(fee.amount, part.seconds, period.seconds, plan.minor_digits),
        )
        for fee in plan.fixed_fees
    ]


def commitment_true_up(part: Slice, period: Period, billed: Sequence[Decimal]) -> Decimal:
    """What is missing to reach the plan's minimum commitment (prorated to the slice) once
    the slice's rounded lines are summed; zero when there is no commitment or it is met."""
    if part.plan.commitment is None:
        return Decimal(0)
    committed = prorate(part.plan.commitment, part.seconds, period.seconds,
                        part.plan.minor_digits)  # fmt: skip
    return max(Decimal(0), committed - sum(billed, Decimal(0)))
