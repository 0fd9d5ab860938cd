"""``meterline invoices credit`` / ``void`` and ``meterline credit-notes``: correcting a
finalized invoice, which never changes, by a credit note of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from meterline.cli_support import (
    console,
    corrector,
    export_options,
    fail,
    load_book,
    load_settings,
    opened_store,
    write_export,
)


def _asked(lines: tuple[str, ...]) -> dict[int, Decimal | None]:
    """``--line`` values: "3" (all that is left of line 3) or "3=12.50"."""
    asked: dict[int, Decimal | None] = {}
    for given in lines:
        number, _, amount = given.partition("=")
        try:
            asked[int(number)] = Decimal(amount) if amount else None
        except (ValueError, InvalidOperation):
            fail(f"--line {given!r}: give a line number, or NUMBER=AMOUNT (3=12.50)")
    return asked


@click.command("credit")
@click.argument("invoice_id")
@click.option("--line", "lines", multiple=True, required=True,
              help="A line to credit: N for all that is left of it, N=AMOUNT for part of it. "
              "Repeat for several.")  # fmt: skip
@click.option("--reason", required=True, help="Why: it is printed on the credit note.")
def credit_command(invoice_id: str, lines: tuple[str, ...], reason: str) -> None:
    """Credit lines of a finalized invoice, in whole or in part, by a credit note with the
    tenant's next credit note number. The tax is credited at the invoice's rate."""
    _issue(invoice_id, _asked(lines), reason)


@click.command("void")
@click.argument("invoice_id")
@click.option("--reason", required=True, help="Why: it is printed on the credit note.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def void_command(invoice_id: str, reason: str, yes: bool) -> None:
    """Void a finalized invoice: a credit note for all that is left of every line."""
    if not yes:
        click.confirm(f"Void {invoice_id}? The credit note cannot be undone", abort=True)
    _issue(invoice_id, None, reason)


def _issue(invoice_id: str, asked: dict[int, Decimal | None] | None, reason: str) -> None:
    from invoicing.credit_ledger import CreditLedger, issue_credit_note
    from invoicing.credit_notes import CreditError
    from invoicing.export import money
    from invoicing.sources import Sources

    settings = load_settings()
    with opened_store(settings) as connection:
        corrector(settings, load_book(settings), connection, None)
        try:
            note = issue_credit_note(Sources.over(connection).ledger, CreditLedger(connection),
                                     invoice_id, asked, reason=reason,
                                     today=datetime.now(UTC).date())  # fmt: skip
        except CreditError as error:
            fail(str(error))
    console.print(
        f"credit note No. {note.number_label} ({note.credit_note_id}) for {note.invoice_id}: "
        f"{money(note.subtotal, note.currency)} + tax {money(note.tax, note.currency)} = "
        f"{money(note.total, note.currency)} {note.currency} credited"
    )


@click.group("credit-notes")
def credit_notes() -> None:
    """Credit notes: list, show and export them."""


@credit_notes.command("list")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@click.option("--invoice", "invoice_id", default=None, help="Only those of this invoice.")
def list_notes(tenant: str | None, invoice_id: str | None) -> None:
    """Every credit note, by tenant and number."""
    from rich.table import Table

    from invoicing.credit_ledger import CreditLedger
    from invoicing.export import money

    with opened_store(load_settings()) as connection:
        found = CreditLedger(connection).notes(tenant, invoice_id=invoice_id)
    table = Table("Number", "Id", "Tenant", "Invoice", "Issued", "Reason", "Total")
    for note in found:
        table.add_row(note.number_label, note.credit_note_id, note.tenant, note.invoice_id,
                      note.issued_on.isoformat(), note.reason,
                      f"{money(note.total, note.currency)} {note.currency}")  # fmt: skip
    console.print(table)


@credit_notes.command("explain")
@click.argument("credit_note_id")
def explain_note(credit_note_id: str) -> None:
    """Explain a credit note: per line, what the invoice billed, what earlier notes took,
    what this one credits and what is left; then the invoice's total after it."""
    from invoicing.credit_ledger import CreditLedger
    from invoicing.credit_notes import explain_credit
    from invoicing.explain import corrections_of
    from invoicing.sources import Sources

    settings = load_settings()
    with opened_store(settings) as connection:
        credits = CreditLedger(connection)
        found = credits.notes(credit_note_id=credit_note_id)
        if not found:
            fail(f"no credit note {credit_note_id}")
        (note,) = found
        invoice = Sources.over(connection).ledger.find(note.invoice_id)
        if invoice is None:
            fail(f"{credit_note_id} credits {note.invoice_id}, which is not in the ledger")
        every = credits.notes(note.tenant, invoice_id=note.invoice_id)
        facts = explain_credit(note, invoice, every)
        if note.correction:  # what the correction changed, that the note credits
            facts += corrections_of(
                Sources.over(connection),
                load_book(settings),
                note.tenant,
                note.subscription,
                note.period,
                correction=note.correction,
            )
    console.print(f"[bold]credit note No. {note.number_label}[/] ({note.credit_note_id})")
    for fact in facts:
        console.print(f"  • {fact}", highlight=False)


@credit_notes.command("export")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@export_options("credit note")
def export_notes(tenant: str | None, fmt: str, output: Path | None) -> None:
    """Export credit notes as JSON, CSV (a row per credited line), printable HTML, or a
    PDF file per credit note."""
    from invoicing.credit_export import render
    from invoicing.credit_ledger import CreditLedger

    with opened_store(load_settings()) as connection:
        found = CreditLedger(connection).notes(tenant)
    write_export(found, fmt, output, render=render, name=lambda note: note.credit_note_id,
                 written=f"{len(found):,} credit notes")  # fmt: skip
