"""Changes to a subscription's life: ending it (now, on a date, or at the end of the
period) and renewing it (removing an end). Pure checks: a change that would alter a
finalized invoice, or put an end before the start, is refused with the reason, and the
caller writes nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time

from invoicing.store import SubscriptionRow
from rating.period import Period


class LifecycleError(ValueError):
    """The change cannot be made; the message says why."""


def period_end(moment: datetime) -> datetime:
    """The end of the billing period ``moment`` falls in (midnight UTC, exclusive)."""
    return datetime.combine(Period.of(moment.astimezone(UTC).date()).end, time(), tzinfo=UTC)


def cancel(row: SubscriptionRow, at: datetime, last_finalized: date | None) -> SubscriptionRow:
    """End the subscription at ``at`` (exclusive): usage from then on is refused, and fees
    are prorated to the day."""
    name = f"{row.tenant}/{row.subscription}"
    if at <= row.started_at:
        raise LifecycleError(
            f"{name} started {row.started_at.isoformat()}; an end at {at.isoformat()} is not "
            "after its start"
        )
    if row.ended_at is not None and at >= row.ended_at:
        raise LifecycleError(
            f"{name} already ends at {row.ended_at.isoformat()}; renew it first to end it later"
        )
    _outside_finalized(name, at, last_finalized)
    if row.ended_at is not None:
        _outside_finalized(name, row.ended_at, last_finalized)
    return replace(row, ended_at=at)


def renew(row: SubscriptionRow, last_finalized: date | None) -> SubscriptionRow:
    """Remove the subscription's end, so it is billed on."""
    name = f"{row.tenant}/{row.subscription}"
    if row.ended_at is None:
        raise LifecycleError(f"{name} has no end to remove: it is billed on already")
    _outside_finalized(name, row.ended_at, last_finalized)
    return replace(row, ended_at=None)


def _outside_finalized(name: str, moment: datetime, last_finalized: date | None) -> None:
    period = Period.of(moment.astimezone(UTC).date()).start
    if last_finalized is not None and period <= last_finalized:
        raise LifecycleError(
            f"{moment.isoformat()} falls in {period:%Y-%m}, and {name}'s invoices are finalized "
            f"up to {last_finalized:%Y-%m}: a finalized invoice never changes (correct it on "
            "the next one instead)"
        )
