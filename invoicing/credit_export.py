"""Credit notes for billing to read: JSON (decimal strings), CSV (a row per credited line)
and HTML (a printable page per note), like invoices (``export``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import msgspec

from invoicing.credit_notes import CreditNote
from invoicing.export import environment, money


def as_dict(note: CreditNote) -> dict[str, Any]:
    cur = note.currency
    return {
        "id": note.credit_note_id, "number": note.number_label, "tenant": note.tenant,
        "credits_invoice": note.invoice_id, "invoice_number": f"{note.invoice_number:06d}",
        "subscription": note.subscription, "period": f"{note.period:%Y-%m}",
        "issued_on": note.issued_on.isoformat(), "reason": note.reason, "currency": cur,
        "subtotal": money(note.subtotal, cur), "tax": money(note.tax, cur),
        "total": money(note.total, cur),
        "lines": [
            {"invoice_line": line.line, "kind": line.kind, "item": line.item,
             "plan": line.plan, "plan_version": line.plan_version,
             "description": line.description, "amount": money(line.amount, cur),
             "tax": money(line.tax, cur)}
            for line in note.lines
        ],
    }  # fmt: skip


def to_json(notes: Sequence[CreditNote]) -> str:
    return msgspec.json.format(msgspec.json.encode([as_dict(n) for n in notes])).decode()


CSV_HEADER = ("credit_note_id", "number", "tenant", "invoice_id", "invoice_number",
              "subscription", "period", "issued_on", "reason", "invoice_line", "kind", "item",
              "plan", "plan_version", "description", "currency", "amount", "tax")  # fmt: skip


def to_csv(notes: Sequence[CreditNote]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for note in notes:
        for line in note.lines:
            writer.writerow(
                [note.credit_note_id, note.number_label, note.tenant, note.invoice_id,
                 f"{note.invoice_number:06d}", note.subscription, f"{note.period:%Y-%m}",
                 note.issued_on.isoformat(), note.reason, line.line, line.kind, line.item,
                 line.plan, line.plan_version, line.description, note.currency,
                 money(line.amount, note.currency), money(line.tax, note.currency)]
            )  # fmt: skip
    return out.getvalue()


def to_html(notes: Sequence[CreditNote]) -> str:
    return environment.get_template("credit_notes.html.j2").render(notes=notes)


def render(notes: Sequence[CreditNote], fmt: str) -> str:
    return {"json": to_json, "csv": to_csv, "html": to_html}[fmt](notes)
