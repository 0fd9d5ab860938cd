"""The registry's operations over the subscription store, made the same way from the
command line and the HTTP API: read the subscription, check the change (``lifecycle``),
write the row it leads to with a newer version and add an entry to its history. Each
returns the rows it wrote, each with the version it was written under, for the caller to
publish to the workers (``feed.announce``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from rating.period import midnight
from rating.plans import Entitlement, PriceBook
from subscriptions import lifecycle
from subscriptions.directory import REFRESH_SECONDS
from subscriptions.imports import currency_problems
from subscriptions.lifecycle import LifecycleError
from subscriptions.model import Change, Customer, Subscription, version_of
from subscriptions.store import SubscriptionStore

log = logging.getLogger(__name__)

Apply = Callable[[Subscription, date | None, Customer | None], Subscription]


class UnknownSubscriptionError(LookupError):
    """No such subscription for the tenant."""


@dataclass(frozen=True)
class Operation:
    """A change to one subscription: its name in the history, the check-and-apply step,
    and when it takes effect for the row it applies to (None for a renewal)."""

    kind: str
    apply: Apply
    effective: Callable[[Subscription], datetime | None]


def change_notice(max_clock_skew_seconds: float) -> timedelta:
    """A change reaches every worker on the topic within a second; one that was not
    published, with their next re-read of the store. Twice that, plus the clock skew events
    may have, is the notice a plan change needs."""
    return timedelta(seconds=max_clock_skew_seconds + 2 * REFRESH_SECONDS)


# How far ahead of the request an immediate change takes effect: the row is stored, and
# every worker that prices an event stamped after it reads the store first (the directory
# reads it again for any batch stamped after its last read), so it must be written first.
IMMEDIATE_LEAD = timedelta(seconds=1)


@dataclass(frozen=True)
class FromDay:
    """When a dated change takes effect: from the start of ``day``, of the subscription's
    next period, or else of the earliest day every worker learns of it in time; or, made
    ``immediately`` (a plan change only), at the next whole second a moment after now."""

    day: date | None
    at_period_end: bool
    now: datetime
    notice: timedelta
    immediately: bool = False

    def __post_init__(self) -> None:
        if self.day is not None and self.at_period_end:
            raise LifecycleError("give a day (on) or the end of the period, not both")
        if self.immediately and (self.day is not None or self.at_period_end):
            raise LifecycleError("an immediate change takes no day (on) or end of the period")
        if self.day is not None:
            lifecycle.check_day(self.day, "the day")

    @property
    def earliest(self) -> date:
        return lifecycle.earliest_change_day(self.now, self.notice)

    @property
    def instant(self) -> datetime:
        """When an immediate change takes effect: prorated by the second, so a whole one."""
        later = (self.now + IMMEDIATE_LEAD).astimezone(UTC)
        return later.replace(microsecond=0) + timedelta(seconds=1 if later.microsecond else 0)

    def first(self, row: Subscription) -> date:
        if self.at_period_end:
            return lifecycle.period_end(self.now, row.anchor_day).date()
        return self.day or self.earliest

    def midnight(self, row: Subscription) -> datetime:
        return midnight(self.first(row))

    def moment(self, row: Subscription) -> datetime:
        return self.instant if self.immediately else self.midnight(row)


def plan_change(plan: str, when: FromDay, book: PriceBook) -> Operation:
    def move(row: Subscription, final: date | None, customer: Customer | None) -> (
        Subscription
    ):  # fmt: skip
        earliest = when.instant if when.immediately else midnight(when.earliest)
        return lifecycle.change_plan(
            row, plan, when.moment(row), earliest=earliest, last_finalized=final, book=book,
            customer=customer,
        )  # fmt: skip

    return Operation("plan changed", move, when.moment)


def price_revision(percent: Decimal, when: FromDay, book: PriceBook) -> Operation:
    def uplift(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        return lifecycle.revise(row, percent, when.first(row), earliest=when.earliest,
                                last_finalized=final, book=book)  # fmt: skip

    return Operation("prices revised", uplift, when.midnight)


def add_on_change(add_on: str, adding: bool, when: FromDay, book: PriceBook) -> Operation:
    """Add (or remove) a price book add-on's charges and fees from a day on."""

    def vary(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        return lifecycle.change_add_on(
            row, add_on, when.first(row), adding=adding, earliest=when.earliest,
            last_finalized=final, book=book,
        )  # fmt: skip

    return Operation("charge added" if adding else "charge removed", vary, when.midnight)


def coupon_change(coupon: str, adding: bool, day: date | None, book: PriceBook, *,
                  now: datetime) -> Operation:  # fmt: skip
    """Take on the price book's coupon from ``day`` (today by default), or end it from
    then. Coupons change invoices only, never what a worker prices: no notice is needed."""
    if day is not None:
        lifecycle.check_day(day, "the day")
    first = day or now.astimezone(UTC).date()

    def vary(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        if adding:
            return lifecycle.add_coupon(row, coupon, first, last_finalized=final, book=book)
        return lifecycle.remove_coupon(row, coupon, first, last_finalized=final)

    return Operation("coupon applied" if adding else "coupon removed", vary,
                     lambda _: midnight(first))  # fmt: skip


def feature_grant(entitlement: Entitlement, day: date | None, until: date | None,
                  book: PriceBook, *, now: datetime) -> Operation:  # fmt: skip
    """Give the subscription a feature (or more of a metered one) from ``day`` (today by
    default) until ``until``. Entitlements price nothing: no notice is needed."""
    first = day or now.astimezone(UTC).date()
    for given in (first, until):
        if given is not None:
            lifecycle.check_day(given, "the day")

    def give(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        return lifecycle.grant_feature(row, entitlement, first, until, book)

    return Operation("feature granted", give, lambda _: midnight(first))


def feature_revocation(feature: str, day: date | None, *, now: datetime) -> Operation:
    """End what was given of ``feature`` from ``day`` (today by default)."""
    first = day or now.astimezone(UTC).date()
    lifecycle.check_day(first, "the day")

    def take(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        return lifecycle.revoke_feature(row, feature, first)

    return Operation("feature revoked", take, lambda _: midnight(first))


def cancellation(at: datetime | None, at_period_end: bool, *, now: datetime) -> Operation:
    if at is not None and at_period_end:
        raise LifecycleError("give a time (at) or the end of the period, not both")
    if at is not None:
        lifecycle.check_day(at.astimezone(UTC).date(), "the end")

    def moment(row: Subscription) -> datetime:
        return lifecycle.period_end(now, row.anchor_day) if at_period_end else at or now

    def end(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        return lifecycle.cancel(row, moment(row), final)

    return Operation("cancelled", end, moment)


def renewal() -> Operation:
    def keep(row: Subscription, final: date | None, _: Customer | None) -> Subscription:
        return lifecycle.renew(row, final)

    return Operation("renewed", keep, lambda _: None)


def perform(
    store: SubscriptionStore, tenant: str, subscription: str, operation: Operation, now: datetime
) -> Subscription:
    """Check and write ``operation``, and return the row written (with its version); raises
    ``UnknownSubscriptionError`` or ``LifecycleError`` (with the reason) and then writes
    nothing."""
    row = store.subscription(tenant, subscription)
    if row is None:
        raise UnknownSubscriptionError(f"no subscription {subscription!r} for tenant {tenant!r}")
    final = store.finalized_through(tenant, subscription)
    changed = replace(operation.apply(row, final, store.customer(tenant, row.customer)),
                      version=version_of(now))  # fmt: skip
    store.write([changed])
    effective = operation.effective(row)
    if effective is not None and effective > now and datetime.now(UTC) >= effective:
        # Only an immediate change takes effect this soon: a worker may have priced an
        # event stamped after it before the row was stored (it stays where it was priced).
        log.warning("%s/%s: the change was stored after it took effect (%s)",
                    tenant, subscription, effective.isoformat())  # fmt: skip
    store.record_changes(
        [Change(tenant, subscription, now, operation.kind, effective,
                changed.plan_at(effective or now), describe(changed))]
    )  # fmt: skip
    return changed


def import_subscriptions(
    store: SubscriptionStore,
    rows: Sequence[Subscription],
    book: PriceBook,
    now: datetime,
    source: str,
) -> list[Subscription]:
    """Write ``rows`` whole and return them as written (with their version), or nothing
    when one is priced in another currency than its customer's or would move its anchor
    (``LifecycleError`` lists them)."""
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
    version = version_of(now)
    written = [replace(row, version=version) for row in rows]
    store.write(written)
    store.record_changes(
        [Change(r.tenant, r.subscription, now, "imported", r.started_at, r.plan, f"from {source}")
         for r in written]
    )  # fmt: skip
    return written


def import_customers(store: SubscriptionStore, customers: Sequence[Customer], now: datetime) -> (
    None
):  # fmt: skip
    """Write ``customers`` whole; a customer already known is replaced."""
    store.write_customers(customers, version=version_of(now))


def describe(row: Subscription) -> str:
    plans = [f"{plan} from {lifecycle.when(moment)}" for moment, plan in row.changes]
    coupons = [f"coupon {c.coupon} from {c.day}" + (f" to {c.ended}" if c.ended else "")
               for c in row.coupons]  # fmt: skip
    coupons += [f"feature {f.feature} from {f.day}" + (f" to {f.ended}" if f.ended else "")
                for f in row.features]  # fmt: skip
    ends = f"ends {row.ended_at.isoformat()}" if row.ended_at else "no end"
    return "; ".join([*plans, *coupons, ends])
