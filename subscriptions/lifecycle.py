"""Changes to a subscription's life: moving it to another plan (an upgrade or a
downgrade), adding or removing an add-on's charges, revising its prices by a percentage,
taking on or ending a coupon (each from a day on), ending it (now, on a date, or at the
end of the period) and renewing it (removing an end). Pure checks: a change that would
alter a finalized invoice, reach back into usage already priced, overlap another, or put
an end before the start is refused with the reason, and the caller writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from rating.period import LAST_DAY, Period, midnight, plan_at
from rating.plans import Entitlement, PriceBook, PriceBookError
from rating.variants import VariantError, check_percent, revised_id, with_add_on, without_add_on
from subscriptions.model import AppliedCoupon, Customer, GrantedFeature, Subscription


class LifecycleError(ValueError):
    """The change cannot be made; the message says why."""


def check_day(day: date, what: str) -> None:
    """Refuse a day the store cannot hold (see ``rating.period.LAST_DAY``)."""
    if not date(1970, 1, 1) <= day <= LAST_DAY:
        raise LifecycleError(f"{what} {day} is outside 1970-01-01 to {LAST_DAY}")


def period_end(moment: datetime, anchor: int = 1) -> datetime:
    """The end of the billing period ``moment`` falls in (midnight UTC, exclusive), for
    periods starting on day ``anchor``."""
    period = Period.of(moment.astimezone(UTC).date(), anchor)
    return midnight(period.end)


def earliest_change_day(now: datetime, notice: timedelta) -> date:
    """A plan change takes effect at the start of a UTC day (fees are prorated by day), at
    least ``notice`` from now: every worker must know it before the first event it prices,
    and events may be stamped ahead of the clock. Usage already priced is never moved."""
    return (now.astimezone(UTC) + notice).date() + timedelta(days=1)


def change_plan(
    row: Subscription,
    plan: str,
    effective: datetime,
    *,
    earliest: datetime,
    last_finalized: date | None,
    book: PriceBook,
    customer: Customer | None = None,
) -> Subscription:
    """Move the subscription to ``plan`` from ``effective``: the start of a day (UTC), or
    the instant an immediate change was made for (``registry.FromDay``)."""
    day = effective.astimezone(UTC).date()
    name = row.name
    if not book.knows(plan):
        raise LifecycleError(
            f"plan {plan!r} is not in the price book (plans: {', '.join(book.versions)})"
        )
    target = book.plan(plan).currency
    if customer is not None and customer.currency:
        refused = customer.refuses(target)
    else:  # no customer says what it pays in: the plan it is on does
        billed_in = book.plan(row.plan_on(day)).currency
        refused = (
            None
            if billed_in == target
            else (
                f"it is billed in {billed_in} and {plan} is priced in {target} (import its "
                "customer with a currency to bill it in another)"
            )
        )
    if refused:
        raise LifecycleError(f"{name} cannot move to {plan}: {refused}")
    if effective < earliest:
        raise LifecycleError(
            f"a plan change takes effect from the start of a day every worker knows of in "
            f"time (or now, made immediately); the earliest is {earliest.date()}"
        )
    if effective <= max(row.started_at, midnight(row.active_from)):
        raise LifecycleError(f"{name} starts {row.started_at.isoformat()}: change it after that")
    if row.ended_at is not None and effective >= row.ended_at:
        raise LifecycleError(f"{name} ends {row.ended_at.isoformat()}: renew it first")
    later = [(m, p) for m, p in row.changes if m > effective]
    if later:
        raise LifecycleError(
            f"{name} already changes to {later[0][1]} at {when(later[0][0])}: changes are made "
            "in time order"
        )
    _outside_finalized(row, effective, last_finalized)
    # A second change for the same moment replaces the first (neither has taken effect).
    earlier = tuple((m, p) for m, p in row.changes if m < effective)
    if plan_at(row.plan, earlier, effective) != plan:
        return replace(row, changes=(*earlier, (effective, plan)))
    if earlier == row.changes:
        raise LifecycleError(f"{name} is on {plan} then already")
    return replace(row, changes=earlier)  # the change undone


def when(moment: datetime) -> str:
    """A change's moment as people read it: its day when it is a midnight."""
    moment = moment.astimezone(UTC)
    return str(moment.date()) if moment == midnight(moment.date()) else moment.isoformat()


def revise(
    row: Subscription,
    percent: Decimal,
    day: date,
    *,
    earliest: date,
    last_finalized: date | None,
    book: PriceBook,
) -> Subscription:
    """Revise every price of the plan the subscription is on by ``percent`` from the
    start of ``day`` (UTC): a move to the revised plan ("growth@+5%"), checked like any
    plan change. A revision of a revised plan compounds."""
    return _vary(row, day, lambda plan: revised_id(plan, check_percent(percent)),
                 earliest=earliest, last_finalized=last_finalized, book=book)  # fmt: skip


def change_add_on(
    row: Subscription,
    add_on: str,
    day: date,
    *,
    adding: bool,
    earliest: date,
    last_finalized: date | None,
    book: PriceBook,
) -> Subscription:
    """Add the price book's add-on ``add_on`` (its charges and fees) to the subscription's
    plan from the start of ``day`` (a move to "growth+<add_on>"), or remove it."""
    vary = with_add_on if adding else without_add_on
    return _vary(row, day, lambda plan: vary(plan, add_on),
                 earliest=earliest, last_finalized=last_finalized, book=book)  # fmt: skip


def _vary(
    row: Subscription,
    day: date,
    vary: Callable[[str], str],
    *,
    earliest: date,
    last_finalized: date | None,
    book: PriceBook,
) -> Subscription:
    """Move to the variant ``vary`` makes of the plan in force on ``day``."""
    name = row.name
    try:
        plan = vary(row.plan_on(day))
        book.variant_versions(plan)  # says why the book cannot make it, if it cannot
    except (VariantError, PriceBookError) as error:
        raise LifecycleError(f"{name}: {error}") from None
    return change_plan(row, plan, midnight(day), earliest=midnight(earliest),
                       last_finalized=last_finalized, book=book)  # fmt: skip


def add_coupon(
    row: Subscription,
    coupon_id: str,
    day: date,
    *,
    last_finalized: date | None,
    book: PriceBook,
) -> Subscription:
    """Take on the price book's coupon from ``day``: it discounts the period ``day``
    falls in, in full, and the ones after it for as long as the coupon lasts."""
    name = row.name
    try:
        coupon = book.coupon(coupon_id)
    except PriceBookError as error:
        raise LifecycleError(f"{name}: {error}") from None
    if day < row.active_from:
        raise LifecycleError(f"{name} starts {row.started_at.isoformat()}: apply it after that")
    billed_in = book.plan(row.plan_on(day)).currency if book.knows(row.plan_on(day)) else None
    if coupon.currency is not None and coupon.currency != billed_in:
        raise LifecycleError(
            f"{name} is billed in {billed_in}; {coupon.label} takes off {coupon.currency}"
        )
    if any(applied.coupon == coupon_id and applied.ended is None for applied in row.coupons):
        raise LifecycleError(f"{name} has {coupon.label} already: remove it first")
    _outside_finalized(row, midnight(day), last_finalized)
    return replace(row, coupons=(*row.coupons, AppliedCoupon(day, coupon_id)))


def remove_coupon(
    row: Subscription, coupon_id: str, day: date, *, last_finalized: date | None
) -> Subscription:
    """End a coupon the subscription took on: it no longer discounts periods that start
    on or after ``day``; taken off entirely when it would discount none."""
    name = row.name
    taken = [i for i, applied in enumerate(row.coupons)
             if applied.coupon == coupon_id and applied.ended is None]  # fmt: skip
    if not taken:
        raise LifecycleError(f"{name} has no coupon {coupon_id!r} to remove")
    _outside_finalized(row, midnight(day), last_finalized)
    applied = row.coupons[taken[0]]
    first = Period.of(applied.day, row.anchor_day)
    kept = list(row.coupons)
    if day <= first.start:
        del kept[taken[0]]
    else:
        kept[taken[0]] = replace(applied, ended=day)
    return replace(row, coupons=tuple(kept))


def cancel(row: Subscription, at: datetime, last_finalized: date | None) -> Subscription:
    """End the subscription at ``at`` (exclusive): usage from then on is refused, and fees
    are prorated to the day."""
    name = row.name
    # The store keeps milliseconds: every reader must see the same end.
    at = at.replace(microsecond=at.microsecond - at.microsecond % 1000)
    if at <= row.started_at:
        raise LifecycleError(
            f"{name} started {row.started_at.isoformat()}; an end at {at.isoformat()} is not "
            "after its start"
        )
    if row.ended_at is not None and at >= row.ended_at:
        raise LifecycleError(
            f"{name} already ends at {row.ended_at.isoformat()}; renew it first to end it later"
        )
    _outside_finalized(row, at, last_finalized)
    if row.ended_at is not None:
        _outside_finalized(row, row.ended_at, last_finalized)
    return replace(row, ended_at=at)


def grant_feature(
    row: Subscription, entitlement: Entitlement, day: date, until: date | None, book: PriceBook
) -> Subscription:
    """Give the subscription ``entitlement`` from ``day`` until ``until`` (exclusive) or
    for good: a feature of its own, or more of a metered one its plan gives (a one-off
    pack of calls). Entitlements bill nothing, so no invoice, finalized or not, changes."""
    name = row.name
    if entitlement.meter is not None and entitlement.meter not in {m.id for m in book.meters}:
        raise LifecycleError(f"{name}: meter {entitlement.meter!r} is not in the price book")
    if until is not None and until <= day:
        raise LifecycleError(f"{name}: a feature ends after it starts ({day} to {until})")
    if row.ended_at is not None and day >= row.ended_at.astimezone(UTC).date():
        raise LifecycleError(f"{name} ends {row.ended_at.isoformat()}: renew it first")
    given = GrantedFeature(day, entitlement.model_dump(mode="json"), until)
    return replace(row, features=(*row.features, given))


def revoke_feature(row: Subscription, feature: str, day: date) -> Subscription:
    """End what was given of ``feature`` from ``day``; a grant that had not started by then
    goes entirely."""
    ending = [
        f for f in row.features if f.feature == feature and (f.ended is None or f.ended > day)
    ]
    if not ending:
        raise LifecycleError(f"{row.name} was given no {feature!r} that lasts past {day}")
    kept = tuple(
        f if f not in ending else replace(f, ended=day)
        for f in row.features
        if f not in ending or f.day < day
    )
    return replace(row, features=kept)


def renew(row: Subscription, last_finalized: date | None) -> Subscription:
    """Remove the subscription's end, so it is billed on."""
    name = row.name
    if row.ended_at is None:
        raise LifecycleError(f"{name} has no end to remove: it is billed on already")
    _outside_finalized(row, row.ended_at, last_finalized)
    return replace(row, ended_at=None)


def _outside_finalized(row: Subscription, moment: datetime, last_finalized: date | None) -> (
    None
):  # fmt: skip
    name = row.name
    period = Period.of(moment.astimezone(UTC).date(), row.anchor_day).label
    if last_finalized is not None and period <= last_finalized:
        raise LifecycleError(
            f"{moment.isoformat()} falls in {period:%Y-%m}, and {name}'s invoices are finalized "
            f"up to {last_finalized:%Y-%m}: a finalized invoice never changes (correct it on "
            "the next one instead)"
        )
