"""``meterline payments``: what customers paid, where each invoice stands, and what
collections did (a failed attempt, a write-off); and ``report collections``."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from meterline.cli_support import (
    Period,
    console,
    errors,
    fail,
    format_option,
    load_settings,
    opened_store,
    previous_month,
    print_rows,
)


@click.group()
def payments() -> None:
    """Payments against finalized invoices, and where each invoice stands."""


def _ledgers(connection: Any) -> tuple[Any, Any, Any]:
    from invoicing.payment_ledger import PaymentLedger
    from invoicing.sources import Sources

    sources = Sources.over(connection)
    return sources.ledger, sources.credits, PaymentLedger(connection)


def _find(ledger: Any, tenant: str, named: str) -> Any:
    from invoicing.payment_ledger import PaymentError, find_invoice

    try:
        return find_invoice(ledger, tenant, named)
    except PaymentError as error:
        fail(str(error))


@payments.command("record")
@click.argument("invoice")
@click.option("--tenant", required=True)
@click.option("--amount", required=True, help="What was received, in the invoice's currency.")
@click.option("--on", "received_on", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The day it was received.  [default: today]")  # fmt: skip
@click.option("--reference", default="", help="The bank's or provider's reference.")
def record(invoice: str, tenant: str, amount: str, received_on: datetime | None,
           reference: str) -> None:  # fmt: skip
    """Record a payment of INVOICE (its id or its number). The same payment recorded again
    (same invoice, amount, day and reference) counts once."""
    from invoicing.payment_ledger import PaymentError, payment_of

    try:
        paid = Decimal(amount)
    except InvalidOperation:
        fail(f"--amount {amount!r} is not a number")
    day = received_on.date() if received_on else datetime.now(UTC).date()
    with opened_store(load_settings()) as connection:
        ledger, _, kept = _ledgers(connection)
        found = _find(ledger, tenant, invoice)
        try:
            kept.record([payment_of(found, paid, day, reference, "manual")])
        except PaymentError as error:
            fail(str(error))
    console.print(f"recorded {paid} {found.currency} on {day} against No. {found.number_label}")


@payments.command("import")
@click.argument("statement", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", required=True)
def import_statement(statement: Path, tenant: str) -> None:
    """Record the payments of a bank statement CSV (header: date, amount, reference): a
    line pays the invoice its reference names (its id, or "invoice 000123") when its
    amount is what that invoice still asks or its total. Other lines are listed, not
    guessed. Importing a statement twice records nothing the second time."""
    from invoicing.payment_ledger import standings
    from invoicing.payments import StatementLine, match_statement

    lines = _statement(statement)
    with opened_store(load_settings()) as connection:
        ledger, credits, kept = _ledgers(connection)
        today = datetime.now(UTC).date()
        held = {s.invoice.number: s for s in standings(ledger, credits, kept, tenant, today)}
        matches = match_statement(tenant, [StatementLine(*line) for line in lines], held)
        kept.record([m.payment for m in matches if m.payment is not None])
    paid = [m for m in matches if m.payment is not None]
    for m in matches:
        if m.payment is None:
            errors.print(f"[yellow]not matched:[/] line {m.line.number} ({m.line.on}, "
                         f"{m.line.amount}, {m.line.reference!r}): {m.problem}",
                         highlight=False)  # fmt: skip
    console.print(f"{len(paid):,} of {len(matches):,} lines matched an invoice and were recorded")


def _statement(path: Path) -> list[tuple[int, date, Decimal, str]]:
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        fail(f"cannot read {path}: {error}")
    if rows and not {"date", "amount", "reference"} <= set(rows[0]):
        fail(f"{path}: the header names date, amount and reference")
    found, problems = [], []
    for number, row in enumerate(rows, start=2):
        try:
            amount = Decimal(row["amount"].strip().replace(",", ""))
            found.append((number, date.fromisoformat(row["date"].strip()), amount,
                          row["reference"]))  # fmt: skip
        except (ValueError, InvalidOperation):
            problems.append(f"line {number}: date {row['date']!r} or amount {row['amount']!r} "
                            "is not a day (YYYY-MM-DD) and a number")  # fmt: skip
    if problems:
        fail("; ".join(problems))
    return found


@payments.command("list")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@click.option("--state", default=None, help="Only invoices in this state (overdue, paid, …).")
@format_option
def list_standings(tenant: str | None, state: str | None, fmt: str) -> None:
    """Every finalized invoice with what it asks, what was paid and its state: due, paid,
    partially_paid, overdue, failed or written_off."""
    from invoicing.payment_ledger import standings

    with opened_store(load_settings()) as connection:
        found = standings(*_ledgers(connection), tenant, datetime.now(UTC).date())
    rows = [(s.invoice.tenant, s.invoice.number_label, s.invoice.invoice_id,
             s.invoice.subscription, str(s.invoice.due_on or ""), s.invoice.currency, s.asked,
             s.paid, s.outstanding, s.state)
            for s in found if state is None or s.state == state]  # fmt: skip
    print_rows("Invoices and payments", ("tenant", "number", "invoice", "subscription", "due_on",
                                         "currency", "asked", "paid", "outstanding", "state"),
               rows, fmt)  # fmt: skip


def _event(invoice: str, tenant: str, event: str, reason: str) -> None:
    from invoicing.payment_ledger import standing_now
    from invoicing.payments import PAID

    with opened_store(load_settings()) as connection:
        ledger, credits, kept = _ledgers(connection)
        found = _find(ledger, tenant, invoice)
        now = standing_now(credits, kept, found, datetime.now(UTC).date())
        if now.state == PAID:
            fail(f"No. {found.number_label} is paid")
        kept.note(tenant, found.invoice_id, event, reason)
    console.print(f"No. {found.number_label} ({found.invoice_id}): {event.replace('_', ' ')}")


@payments.command("failed")
@click.argument("invoice")
@click.option("--tenant", required=True)
@click.option("--reason", required=True, help="What the provider said.")
def failed(invoice: str, tenant: str, reason: str) -> None:
    """Note that a payment attempt of INVOICE failed (as a provider reports it)."""
    from invoicing.payments import FAILED

    _event(invoice, tenant, FAILED, reason)


@payments.command("write-off")
@click.argument("invoice")
@click.option("--tenant", required=True)
@click.option("--reason", required=True)
def write_off(invoice: str, tenant: str, reason: str) -> None:
    """Give up collecting what INVOICE still asks: it counts as lost."""
    from invoicing.payments import WRITTEN_OFF

    _event(invoice, tenant, WRITTEN_OFF, reason)


@click.command("collections")
@click.option("--until", type=Period(), default=None, help="Last month.  [default: last month]")
@click.option("--months", type=click.IntRange(1, 120), default=3, show_default=True)
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@format_option
def report_collections(until: date | None, months: int, tenant: str | None, fmt: str) -> None:
    """Per currency, over the months: what was invoiced and collected, what of it was
    recovered after the due day; and today what is outstanding and lost, with days sales
    outstanding (outstanding / invoiced x the window's days)."""
    from invoicing.payment_ledger import standings
    from invoicing.payments import collections
    from rating.period import Period as BillingPeriod

    last = BillingPeriod.of(until or previous_month())
    first = last.shifted(1 - months)
    with opened_store(load_settings()) as connection:
        ledger, credits, kept = _ledgers(connection)
        held = standings(ledger, credits, kept, tenant, datetime.now(UTC).date())
        received = [p for found in kept.payments(tenant).values() for p in found]
    rows = collections(held, received, first.start, last.end)
    print_rows(f"Collections, {months} months to {last.start:%Y-%m}",
               ("currency", "invoiced", "collected", "recovered", "outstanding", "lost", "dso"),
               [(r.currency, r.invoiced, r.collected, r.recovered, r.outstanding, r.lost, r.dso)
                for r in rows], fmt)  # fmt: skip
