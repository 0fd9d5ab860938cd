"""The registry's operations over a store, made the same way from the command line and
the HTTP API: read the subscription, check the change (``lifecycle``), write the row it
leads to with a newer version and add an entry to its history. Each returns the rows it
wrote, for the caller to publish to the workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from aggregation.subscriptions import REFRESH_SECONDS
from invoicing import lifecycle
from invoicing.invoice import Customer
from invoicing.lifecycle import LifecycleError
from invoicing.store import Store, SubscriptionChange, SubscriptionRow
from invoicing.subscription_import import currency_problems
from rating.period import plan_on
from rating.plans import PriceBook

Apply = Callable[[SubscriptionRow, date | None, Customer | None], SubscriptionRow]


class UnknownSubscriptionError(LookupError):
    """No such subscription for the tenant."""


@dataclass(frozen=True)
class Operation:
    """A change to one subscription: its name in the history, the check-and-apply step,
    and when it takes effect for the row it applies to (None for a renewal)."""

    kind: str
    apply: Apply
    effective: Callable[[SubscriptionRow], datetime | None]


def version_of(now: datetime) -> int:
    """Rows written later carry larger versions, so the latest write wins everywhere."""
    return int(now.timestamp() * 1000)


def change_notice(max_clock_skew_seconds: float) -> timedelta:
    """A change reaches every worker on the topic within a second; one that was not
    published, with their next re-read of the store. Twice that, plus the clock skew events
    may have, is the notice a plan change needs."""
    return timedelta(seconds=max_clock_skew_seconds + 2 * REFRESH_SECONDS)


@dataclass(frozen=True)
class FromDay:
    """When a dated change takes effect: from the start of ``day``, of the subscription's
    next period, or else of the earliest day every worker learns of it in time."""

    day: date | None
    at_period_end: bool
    now: datetime
    notice: timedelta

    def __post_init__(self) -> None:
        if self.day is not None and self.at_period_end:
            raise LifecycleError("give a day (on) or the end of the period, not both")
        if self.day is not None:
            lifecycle.check_day(self.day, "the day")

    @property
    def earliest(self) -> date:
        return lifecycle.earliest_change_day(self.now, self.notice)

    def first(self, row: SubscriptionRow) -> date:
        if self.at_period_end:
            return lifecycle.period_end(self.now, row.anchor_day).date()
        return self.day or self.earliest

    def midnight(self, row: SubscriptionRow) -> datetime:
        return datetime.combine(self.first(row), time(), tzinfo=UTC)


def plan_change(plan: str, when: FromDay, book: PriceBook) -> Operation:
    def move(row: SubscriptionRow, final: date | None, customer: Customer | None) -> (
        SubscriptionRow
    ):  # fmt: skip
        return lifecycle.change_plan(
            row, plan, when.first(row), earliest=when.earliest, last_finalized=final, book=book,
            customer=customer,
        )  # fmt: skip

    return Operation("plan changed", move, when.midnight)


def price_revision(percent: Decimal, when: FromDay, book: PriceBook) -> Operation:
    def uplift(row: SubscriptionRow, final: date | None, _: Customer | None) -> SubscriptionRow:
        return lifecycle.revise(row, percent, when.first(row), earliest=when.earliest,
                                last_finalized=final, book=book)  # fmt: skip

    return Operation("prices revised", uplift, when.midnight)


def add_on_change(add_on: str, adding: bool, when: FromDay, book: PriceBook) -> Operation:
    """Add (or remove) a price book add-on's charges and fees from a day on."""

    def vary(row: SubscriptionRow, final: date | None, _: Customer | None) -> SubscriptionRow:
        return lifecycle.change_add_on(
            row, add_on, when.first(row), adding=adding, earliest=when.earliest,
            last_finalized=final, book=book,
        )  # fmt: skip

    return Operation("charge added" if adding else "charge removed", vary, when.midnight)


def cancellation(at: datetime | None, at_period_end: bool, *, now: datetime) -> Operation:
    if at is not None and at_period_end:
        raise LifecycleError("give a time (at) or the end of the period, not both")
    if at is not None:
        lifecycle.check_day(at.astimezone(UTC).date(), "the end")

    def moment(row: SubscriptionRow) -> datetime:
        return lifecycle.period_end(now, row.anchor_day) if at_period_end else at or now

    def end(row: SubscriptionRow, final: date | None, _: Customer | None) -> SubscriptionRow:
        return lifecycle.cancel(row, moment(row), final)

    return Operation("cancelled", end, moment)


def renewal() -> Operation:
    def keep(row: SubscriptionRow, final: date | None, _: Customer | None) -> SubscriptionRow:
        return lifecycle.renew(row, final)

    return Operation("renewed", keep, lambda _: None)


def perform(
    store: Store, tenant: str, subscription: str, operation: Operation, now: datetime
) -> SubscriptionRow:
    """Check and write ``operation``; raises ``UnknownSubscriptionError`` or
    ``LifecycleError`` (with the reason) and then writes nothing."""
    row = store.subscription(tenant, subscription)
    if row is None:
        raise UnknownSubscriptionError(f"no subscription {subscription!r} for tenant {tenant!r}")
    final = store.last_finalized_period(tenant, subscription)
    changed = operation.apply(row, final, store.customer(tenant, row.customer))
    store.write_subscriptions([changed], version=version_of(now))
    effective = operation.effective(row)
    day = (effective or now).astimezone(UTC).date()
    store.record_changes(
        [SubscriptionChange(tenant, subscription, now, operation.kind, effective,
                            plan_on(changed.plan, changed.changes, day), describe(changed))]
    )  # fmt: skip
    return changed


def import_subscriptions(
    store: Store, rows: Sequence[SubscriptionRow], book: PriceBook, now: datetime, source: str
) -> None:
    """Write ``rows`` whole, or nothing when one is priced in another currency than its
    customer's (``LifecycleError`` lists them)."""
    refused = currency_problems(rows, store.customers(), book)
    known = store.anchor_days([(r.tenant, r.subscription) for r in rows])
    refused += [
        f"{r.tenant}/{r.subscription}: anchor_day {r.anchor_day} differs from its "
        f"{known[(r.tenant, r.subscription)]}: a new anchor would move periods already billed"
        for r in rows
        if known.get((r.tenant, r.subscription), r.anchor_day) != r.anchor_day
    ]
    if refused:
        raise LifecycleError(f"{source}: nothing imported:\n  " + "\n  ".join(refused))
    store.write_subscriptions(rows, version=version_of(now))
    store.record_changes(
        [SubscriptionChange(r.tenant, r.subscription, now, "imported", r.started_at, r.plan,
                            f"from {source}") for r in rows]
    )  # fmt: skip


def describe(row: SubscriptionRow) -> str:
    plans = "; ".join(f"{plan} from {day}" for day, plan in row.changes)
    ends = f"ends {row.ended_at.isoformat()}" if row.ended_at else "no end"
    return f"{plans}; {ends}" if plans else ends
