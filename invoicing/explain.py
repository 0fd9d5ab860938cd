"""Why an invoice line says what it says: for usage, the windows of deduplicated events
behind it, read from the audit trail and aggregated as the meter declares, so the sum can
be checked against the line; for a fee or a true-up, the arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import msgspec

from invoicing.invoice import FIXED_FEE, TRUE_UP, USAGE, Invoice, InvoiceLine, invoice_id
from invoicing.ledger import InvoiceLedger
from invoicing.store import Store
from rating.money import plain, trimmed
from rating.period import Period, Slice, subscription_slices
from rating.plans import Meter, PriceBook

_AGGREGATES = {
    "sum": "sum(quantity)",
    "count": "count()",
    "max": "max(quantity)",
    "latest": "argMax(quantity, timestamp)",
}
_WINDOWS = {"hour": "toStartOfHour", "day": "toStartOfDay"}


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
    store: Store, book: PriceBook, invoice: Invoice, number: int, window: str = "day"
) -> Explanation:
    if not 1 <= number <= len(invoice.lines):
        raise ExplainError(
            f"{invoice.invoice_id} has lines 1 to {len(invoice.lines)}; there is no line {number}"
        )
    line = invoice.lines[number - 1]
    if line.kind == USAGE:
        return _usage(store, book, invoice, number, window=window)
    return Explanation(invoice, number, line, _arithmetic(store, book, invoice, line))


def _usage(
    store: Store, book: PriceBook, invoice: Invoice, number: int, *, window: str
) -> Explanation:
    line = invoice.lines[number - 1]
    meter = book.meter(line.item)
    part = _slice(store, book, invoice, line, billed_days=False)
    period = Period.labelled(line.applies_to, invoice.anchor_day)
    since, until = (part.start, part.end) if part else (period.start, period.end)
    finalized_at = None
    if line.is_adjustment_on(invoice.period):
        billed = InvoiceLedger(store).find(
            invoice_id(invoice.tenant, invoice.subscription, line.applies_to)
        )
        finalized_at = billed.finalized_at if billed else None
    where, params = _event_filter(invoice, line, since, until)
    params["late_after"] = finalized_at or datetime(2200, 1, 1)
    params["unique"] = meter.unique or ""
    rows = store.client.query(
        f"SELECT {_WINDOWS[window]}(timestamp) AS window, count(), sum(quantity), "
        "countIf(ingested_at > {late_after:DateTime64(3, 'UTC')}) "
        f"FROM {store.table('events')} FINAL WHERE {where} GROUP BY window ORDER BY window",
        parameters=params,
    ).result_rows
    windows = [
        Window(start, int(events), Decimal(int(total)).scaleb(-meter.scale), int(late))
        for start, events, total, late in rows
    ]
    aggregate = store.client.query(
        f"SELECT {_aggregate(meter)} FROM {store.table('events')} FINAL WHERE {where}",
        parameters=params,
    ).result_rows[0][0]
    now = Decimal(int(aggregate or 0)).scaleb(-meter.scale)
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


def _aggregate(meter: Meter) -> str:
    if meter.aggregation == "unique_count":
        return "uniqExact(JSONExtractRaw(properties, {unique:String}))"
    return _AGGREGATES[meter.aggregation]


def _event_filter(
    invoice: Invoice, line: InvoiceLine, since: date, until: date
) -> tuple[str, dict[str, Any]]:
    where = (
        "tenant = {tenant:String} AND subscription = {subscription:String} "
        "AND meter = {meter:String} AND timestamp >= {since:DateTime64(3, 'UTC')} "
        "AND timestamp < {until:DateTime64(3, 'UTC')}"
    )
    params: dict[str, Any] = {
        "tenant": invoice.tenant, "subscription": invoice.subscription, "meter": line.item,
        "since": datetime.combine(since, time()), "until": datetime.combine(until, time()),
    }  # fmt: skip
    group = msgspec.json.decode(line.group) if line.group else {}
    for position, (name, value) in enumerate(group.items()):
        params[f"name{position}"] = name
        if value is None:
            where += f" AND NOT JSONHas(properties, {{name{position}:String}})"
        else:
            params[f"value{position}"] = msgspec.json.encode(value).decode()
            where += (
                f" AND JSONExtractRaw(properties, {{name{position}:String}}) = "
                f"{{value{position}:String}}"
            )
    return where, params


def _slice(
    store: Store, book: PriceBook, invoice: Invoice, line: InvoiceLine, *, billed_days: bool
) -> Slice | None:
    """The days of the billed period the line's plan and version were in force for the
    subscription: from its start when ``billed_days`` (fees), else from the period's (the
    worker bills usage stamped before a start under the first plan)."""
    period = Period.labelled(line.applies_to, invoice.anchor_day)
    row = store.subscription(invoice.tenant, invoice.subscription)
    if row is None:
        return None
    starts = row.started_at.date() if billed_days else period.start
    ends = row.ended_at.date() if row.ended_at and billed_days else None
    for part in subscription_slices(book, row.plan, period, starts, ends, changes=row.changes):
        if (part.plan.id, part.plan.version) == (line.plan, line.plan_version):
            return part
    return None


def _arithmetic(store: Store, book: PriceBook, invoice: Invoice, line: InvoiceLine) -> list[str]:
    period = Period.labelled(line.applies_to, invoice.anchor_day)
    part = _slice(store, book, invoice, line, billed_days=True)
    money = f"{plain(line.rated)} {line.currency}"
    if part is None:
        return [f"{line.description}: {money} (the plan version is no longer in force)"]
    in_force = (
        f"{line.plan} v{line.plan_version} billed from {part.start} to {part.end} (exclusive): "
        f"{part.days} of the period's {period.days} days"
    )
    facts = [in_force]
    if line.kind == FIXED_FEE:
        fee = next((f for f in part.plan.fixed_fees if f.id == line.item), None)
        if fee is not None:
            facts.append(
                f"{fee.name or fee.id}: {plain(fee.amount)} {line.currency} per period × "
                f"{part.days}/{period.days}, rounded half up to the minor unit = {money}"
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
            f"{part.days}/{period.days}, less {plain(billed)} billed by the slice's other "
            f"lines = {money}"
        )
    if line.is_adjustment_on(invoice.period):
        facts.append(
            f"an adjustment: {line.applies_to:%Y-%m} now comes to {money} more than was "
            "billed for it (a negative amount is a credit)"
        )
    return facts
