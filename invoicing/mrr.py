"""Monthly recurring revenue for finance: MRR and ARR by month and currency, active
subscriptions, and the movements between months (new, expansion, contraction, churned).

A subscription's MRR is what its plan commits it to each month, whatever its usage: the
plan's fixed fees, or its minimum commitment when that is larger, under the plan and
version in force on the month's last day. Usage above that is revenue, not recurring.
ARR is twelve times MRR; ACV, ARR per active subscription.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from rating.period import Period, plan_on
from rating.plans import PriceBook
from subscriptions.model import Subscription


@dataclass(frozen=True)
class MrrMonth:
    month: date
    currency: str
    mrr: Decimal
    active: int  # subscriptions with recurring revenue on the month's last day
    new: Decimal  # from subscriptions that had none the month before
    expansion: Decimal
    contraction: Decimal  # negative
    churned: Decimal  # negative: subscriptions that had some and have none

    @property
    def arr(self) -> Decimal:
        return self.mrr * 12

    @property
    def acv(self) -> Decimal:
        """Annual contract value: what an active subscription is contracted to a year, on
        average (its plan's fees or commitment, times 12), to the cent."""
        if not self.active:
            return Decimal(0)
        return (self.arr / self.active).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def committed(book: PriceBook, plan_id: str, day: date) -> tuple[str, Decimal] | None:
    """(currency, monthly commitment) of the plan version in force on ``day``."""
    plan = book.plan_at(plan_id, day)
    if plan is None:
        return None
    fees = sum((fee.amount for fee in plan.fixed_fees), Decimal(0))
    return plan.currency, max(fees, plan.commitment or Decimal(0))


def snapshot(subscribers: Sequence[Subscription], book: PriceBook, day: date) -> dict[
    tuple[str, str], tuple[str, Decimal]
]:  # fmt: skip
    """(tenant, subscription) -> (currency, MRR) of every subscription active on ``day``."""
    found = {}
    for sub in subscribers:
        if sub.active_from <= day and (sub.active_until is None or day < sub.active_until):
            value = committed(book, plan_on(sub.plan, sub.changes, day), day)
            if value is not None:
                found[(sub.tenant, sub.subscription)] = value
    return found


def mrr_by_month(
    subscribers: Sequence[Subscription], book: PriceBook, last: date, months: int
) -> list[MrrMonth]:
    """The ``months`` months up to ``last``, oldest first, each compared with the one
    before it."""
    periods = [Period.of(last).shifted(-k) for k in range(months, -1, -1)]
    snapshots = [snapshot(subscribers, book, p.end - timedelta(days=1)) for p in periods]
    found = []
    for period, before, now in zip(periods[1:], snapshots[:-1], snapshots[1:], strict=True):
        moves: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        active: dict[str, int] = defaultdict(int)
        for owner in before.keys() | now.keys():
            old, new = before.get(owner), now.get(owner)
            if new is not None:
                active[new[0]] += 1
            if old is not None and new is not None and old[0] != new[0]:
                _move(moves[old[0]], old[1], None)  # a plan in another currency
                _move(moves[new[0]], Decimal(0), new[1])
            else:
                currency = (new or old or ("", Decimal(0)))[0]
                _move(moves[currency], old[1] if old else Decimal(0), new[1] if new else None)
        for currency in sorted(moves.keys() | active.keys()):
            own = moves[currency]
            found.append(
                MrrMonth(period.start, currency, own["mrr"], active[currency], own["new"],
                         own["expansion"], own["contraction"], own["churned"])
            )  # fmt: skip
    return found


def _move(moves: dict[str, Decimal], then: Decimal, now: Decimal | None) -> None:
    """``now`` is None when the subscription is gone (churned), not merely at zero."""
    if now is None:
        moves["churned"] -= then
        return
    moves["mrr"] += now
    if not then and now:
        moves["new"] += now
    elif now > then:
        moves["expansion"] += now - then
    elif now < then:
        moves["contraction"] += now - then
