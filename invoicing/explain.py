"""Why an invoice line says what it says: for usage, the windows of deduplicated events
behind it, read from the audit trail and aggregated as the meter declares, so the sum can
be checked against the line; for a fee or a true-up, the arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from aggregation.corrections import BACKFILL, COMMITTED, Plan
from aggregation.readers import EventsOf
from invoicing.invoice import (
    DISCOUNT,
    FIXED_FEE,
    TRUE_UP,
    USAGE,
    Invoice,
    InvoiceLine,
    invoice_id,
)
from invoicing.sources import Sources
from rating.money import plain, trimmed
from rating.period import DAY_SECONDS, Period, Slice, midnight, subscription_slices
from rating.plans import PriceBook, PriceBookError


class ExplainError(ValueError):
    """The line cannot be explained as asked; the message says why."""


@dataclass(frozen=True)
class Window:
    start: datetime
    events: int
    quantity: Decimal  # in the meter's units, summed over the window's events
    late_events: int  # of those, how many arrived after the billed period was finalized


@dataclass(frozen=True)
class Explanation:
    invoice: Invoice
    number: int
    line: InvoiceLine
    facts: list[str]
    windows: list[Window] = field(default_factory=list)
    agrees: bool | None = None  # usage: whether the events add up to the line


def explain_line(
    sources: Sources, book: PriceBook, invoice: Invoice, number: int, window: str = "day"
) -> Explanation:
    if not 1 <= number <= len(invoice.lines):
        raise ExplainError(
            f"{invoice.invoice_id} has lines 1 to {len(invoice.lines)}; there is no line {number}"
        )
    line = invoice.lines[number - 1]
    if line.kind == USAGE:
        found = _usage(sources, book, invoice, number, window=window)
    elif line.kind == DISCOUNT:
        found = Explanation(invoice, number, line, _discount(book, invoice, line))
    else:
        found = Explanation(invoice, number, line, _arithmetic(sources, book, invoice, line))
    meter = line.item if line.kind == USAGE else None
    found.facts.extend(corrections_of(sources, book, invoice.tenant, invoice.subscription,
                                      line.applies_to, meter=meter))  # fmt: skip
    return found


def corrections_of(
    sources: Sources, book: PriceBook, tenant: str, subscription: str, period: date, *,
    meter: str | None = None, correction: str | None = None,
) -> list[str]:  # fmt: skip
    """What committed corrections (or the one ``correction``) added to and retracted from
    a subscription's period (of one ``meter``, or of all), one fact per correction."""
    facts = []
    for entry in sources.corrections.journal(tenant, COMMITTED):
        plan = entry.plan
        if correction is not None and plan.correction != correction:
            continue
        if not any(t.subscription == subscription and t.period == period
                   for t in plan.touched):  # fmt: skip
            continue
        moves = [
            (+1, e.meter, e.quantity)
            for e in plan.added
            if e.subscription == subscription and _labelled(e.timestamp, plan, period)
        ]
        moves += [
            (-1, r.meter, r.quantity)
            for r in plan.retracted
            if r.subscription == subscription and _labelled(r.timestamp, plan, period)
        ]
        by_meter: dict[str, list[int]] = {}
        for sign, name, quantity in moves:
            if meter is None or name == meter:
                counted = by_meter.setdefault(name, [0, 0])
                counted[0] += sign
                counted[1] += sign * quantity
        if not by_meter:
            continue
        told = "; ".join(
            f"{events:+,} events, {_signed(Decimal(quantity).scaleb(-book.meter(name).scale))} "
            f"{book.meter(name).unit} of {name}"
            for name, (events, quantity) in sorted(by_meter.items())
        )
        verb = "backfilled" if plan.kind == BACKFILL else "retracted"
        facts.append(f"correction {plan.correction} {verb} events of {period:%Y-%m} on "
                     f"{entry.created_at:%Y-%m-%d}, by {plan.by}, because: {plan.reason}: "
                     f"{told}")  # fmt: skip
    return facts


def _labelled(moment: datetime, plan: Plan, period: date) -> bool:
    """Whether an event stamped ``moment`` falls in the touched period labelled ``period``."""
    return any(t.period == period and t.since <= moment < t.until for t in plan.touched)


def _signed(value: Decimal) -> str:
    return ("+" if value >= 0 else "") + plain(value)


def _discount(book: PriceBook, invoice: Invoice, line: InvoiceLine) -> list[str]:
    try:
        coupon = book.coupon(line.item)
    except PriceBookError:
        return [f"{line.description}: {plain(line.rated)} {line.currency} (the coupon is no "
                "longer in the price book)"]  # fmt: skip
    scope = f"the {coupon.meter} usage lines" if coupon.meter else "the period's lines"
    if line.plan:
        scope += f" of {line.plan} v{line.plan_version} (the plan's discount)"
    how = (
        f"{plain(coupon.percent_off)}% of what earlier discounts left of {scope}"
        if coupon.percent_off is not None
        else f"{plain(coupon.amount_off or Decimal(0))} {coupon.currency} prorated by the "
        f"subscription's active days, taken from {scope} until used up"
    )
    covered = [
        other for other in invoice.lines
        if other.kind != DISCOUNT and other.applies_to == line.applies_to
        and (not coupon.meter or other.item == coupon.meter)
        and (not line.plan or (other.plan, other.plan_version) == (line.plan, line.plan_version))
    ]  # fmt: skip
    lasts = (f"for {coupon.periods} period(s) from the one it starts in" if coupon.periods
             else f"for periods starting before {coupon.until}" if coupon.until
             else "for good")  # fmt: skip
    return [
        f"{coupon.name or coupon.id} ({coupon.id}): {how}; it lasts {lasts}",
        f"it covers {len(covered)} line(s) of {line.applies_to:%Y-%m} worth "
        f"{plain(sum((o.amount for o in covered), Decimal(0)))} {line.currency}; it takes "
        f"{plain(-line.rated)} exactly, {plain(-line.amount)} as rounded (discounts are "
        "rounded as a running total, applied before tax)",
    ]


def _usage(
    sources: Sources, book: PriceBook, invoice: Invoice, number: int, *, window: str
) -> Explanation:
    line = invoice.lines[number - 1]
    meter = book.meter(line.item)
    part = _slice(sources, book, invoice, line, billed_days=False)
    period = Period.labelled(line.applies_to, invoice.anchor_day)
    since, until = (part.start, part.end) if part else (period.start, period.end)
    if meter.aggregation == "weighted_sum":  # its last value holds to the billed end
        fees_slice = _slice(sources, book, invoice, line, billed_days=True)
        until = fees_slice.end if fees_slice else until
    finalized_at = None
    if line.is_adjustment_on(invoice.period):
        billed = sources.ledger.find(
            invoice_id(invoice.tenant, invoice.subscription, line.applies_to)
        )
        finalized_at = billed.finalized_at if billed else None
    events_of = EventsOf(invoice.tenant, invoice.subscription, line.item, line.group,
                         midnight(since), midnight(until))  # fmt: skip
    late_after = finalized_at or datetime(2200, 1, 1)
    windows = [
        Window(w.start, w.events, Decimal(w.quantity).scaleb(-meter.scale), w.late)
        for w in sources.pipeline.event_windows(events_of, window, late_after)
    ]
    aggregate = sources.pipeline.event_aggregate(events_of, meter.aggregation, meter.unique or "",
                                                 meter.per_ms)  # fmt: skip
    now = Decimal(aggregate).scaleb(-meter.scale)
    events = sum(w.events for w in windows)
    facts = [
        f"meter {meter.id} ({meter.aggregation}) under {line.plan} v{line.plan_version}, "
        f"events stamped {since:%Y-%m-%d} to {until:%Y-%m-%d} (exclusive)",
        f"{events:,} deduplicated events in {len(windows):,} {window} windows; "
        f"their {meter.aggregation} is {plain(now)} {meter.unit}",
    ]
    if finalized_at is None:
        agrees = now == line.quantity
        facts.append(
            f"the line bills {trimmed(line.quantity)} {meter.unit}: "
            + ("they agree" if agrees else "they DIFFER (usage arrived since this draft)")
        )
    else:
        late = sum(w.late_events for w in windows)
        agrees = None
        facts.append(
            f"{late:,} of them arrived after the {line.applies_to:%Y-%m} invoice was finalized "
            f"({finalized_at:%Y-%m-%d %H:%M} UTC); the period now comes to {plain(now)} "
            f"{meter.unit}, and this line bills the {trimmed(line.quantity)} not billed before"
        )
    return Explanation(invoice, number, line, facts, windows, agrees)


def _slice(
    sources: Sources, book: PriceBook, invoice: Invoice, line: InvoiceLine, *, billed_days: bool
) -> Slice | None:
    """The days of the billed period the line's plan and version were in force for the
    subscription: from its start when ``billed_days`` (fees), else from the period's (the
    worker bills usage stamped before a start under the first plan)."""
    period = Period.labelled(line.applies_to, invoice.anchor_day)
    row = sources.subscriptions.subscription(invoice.tenant, invoice.subscription)
    if row is None:
        return None
    starts = row.started_at.date() if billed_days else period.start
    ends = row.ended_at.date() if row.ended_at and billed_days else None
    for part in subscription_slices(book, row.plan, period, starts, ends, changes=row.changes):
        if (part.plan.id, part.plan.version) == (line.plan, line.plan_version):
            return part
    return None


def _fraction(part: Slice, period: Period) -> str:
    """What a fee is multiplied by: days of the period, or seconds when an immediate change
    cut the slice within a day."""
    if part.seconds % DAY_SECONDS:
        return f"{part.seconds}/{period.seconds} seconds"
    return f"{part.days}/{period.days}"


def _arithmetic(
    sources: Sources, book: PriceBook, invoice: Invoice, line: InvoiceLine
) -> list[str]:
    period = Period.labelled(line.applies_to, invoice.anchor_day)
    part = _slice(sources, book, invoice, line, billed_days=True)
    money = f"{plain(line.rated)} {line.currency}"
    if part is None:
        return [f"{line.description}: {money} (the plan version is no longer in force)"]
    began = part.starts_at.isoformat() if part.starts_at else str(part.start)
    ended = part.ends_at.isoformat() if part.ends_at else str(part.end)
    fraction = part.share_of(period) or f"{period.days}/{period.days} days"
    in_force = (
        f"{line.plan} v{line.plan_version} billed from {began} to {ended} (exclusive): "
        f"{fraction} of the period"
    )
    facts = [in_force]
    if line.kind == FIXED_FEE:
        fee = next((f for f in part.plan.fixed_fees if f.id == line.item), None)
        if fee is not None:
            facts.append(
                f"{fee.name or fee.id}: {plain(fee.amount)} {line.currency} per period × "
                f"{_fraction(part, period)}, rounded half up to the minor unit = {money}"
            )
    elif line.kind == TRUE_UP and part.plan.commitment is not None:
        billed = sum(
            (
                other.amount
                for other in invoice.lines
                if other.applies_to == line.applies_to
                and other.plan_version == line.plan_version
                and other.kind != TRUE_UP
            ),
            Decimal(0),
        )
        facts.append(
            f"minimum commitment {plain(part.plan.commitment)} {line.currency} × "
            f"{_fraction(part, period)}, less {plain(billed)} billed by the slice's other "
            f"lines = {money}"
        )
    if line.is_adjustment_on(invoice.period):
        facts.append(
            f"an adjustment: {line.applies_to:%Y-%m} now comes to {money} more than was "
            "billed for it (a negative amount is a credit)"
        )
    return facts
