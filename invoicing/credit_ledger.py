"""Credit notes' store: written lines first, then the header that makes them a note, and
read back as ``CreditNote`` objects; a tenant's last number, for the next one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from base.clickhouse import AMOUNT, TIMESTAMP, TableStore, and_tenant, as_utc
from invoicing.credit_notes import CreditError, CreditLine, CreditNote, credit, void
from invoicing.ledger import InvoiceLedger

_HEADER = ("tenant, number, invoice_id, invoice_number, subscription, period_start, currency, "
           "reason, issued_on, correction, written_at")  # fmt: skip
_LINE = ("tenant, number, line, kind, item, plan, plan_version, description, amount, tax, "
         "quantity")  # fmt: skip


class CreditLedger(TableStore):
    def write(self, note: CreditNote) -> None:
        rows = note.lines
        self._client.insert_arrow(self._table("credit_note_lines"), pa.table({
            "tenant": [note.tenant] * len(rows),
            "number": pa.array([note.number] * len(rows), type=pa.uint64()),
            "line": pa.array([r.line for r in rows], type=pa.uint32()),
            "kind": [r.kind for r in rows], "item": [r.item for r in rows],
            "plan": [r.plan for r in rows],
            "plan_version": pa.array([r.plan_version for r in rows], type=pa.uint32()),
            "description": [r.description for r in rows],
            "amount": pa.array([r.amount for r in rows], type=AMOUNT),
            "tax": pa.array([r.tax for r in rows], type=AMOUNT),
            "period_start": pa.array([note.period] * len(rows), type=pa.date32()),
            "subscription": [note.subscription] * len(rows),
            "quantity": pa.array([r.quantity for r in rows], type=AMOUNT),
        }))  # fmt: skip
        self._client.insert_arrow(self._table("credit_notes"), pa.table({
            "tenant": [note.tenant], "number": pa.array([note.number], type=pa.uint64()),
            "credit_note_id": [note.credit_note_id], "invoice_id": [note.invoice_id],
            "invoice_number": pa.array([note.invoice_number], type=pa.uint64()),
            "subscription": [note.subscription],
            "period_start": pa.array([note.period], type=pa.date32()),
            "currency": [note.currency], "reason": [note.reason],
            "issued_on": pa.array([note.issued_on], type=pa.date32()),
            "subtotal": pa.array([note.subtotal], type=AMOUNT),
            "tax": pa.array([note.tax], type=AMOUNT),
            "total": pa.array([note.total], type=AMOUNT),
            "written_at": pa.array([datetime.now(UTC)], type=TIMESTAMP),
            "correction": [note.correction],
        }))  # fmt: skip

    def last_number(self, tenant: str) -> int:
        found = self._client.query(
            f"SELECT max(number) FROM {self._table('credit_notes')} WHERE tenant = {{t:String}}",
            parameters={"t": tenant},
        ).result_rows
        return int(found[0][0] or 0) if found else 0

    def notes(
        self,
        tenant: str | None = None,
        invoice_id: str | None = None,
        credit_note_id: str | None = None,
        since: datetime | None = None,
    ) -> list[CreditNote]:
        """Credit notes (of a tenant; of one invoice; the one ``credit_note_id``; written
        at or after ``since``), by tenant and number."""
        where = "1 = 1" + and_tenant(tenant)
        if invoice_id is not None:
            where += " AND invoice_id = {invoice:String}"
        if credit_note_id is not None:
            where += " AND credit_note_id = {note:String}"
        if since is not None:
            where += " AND written_at >= {since:DateTime64(3, 'UTC')}"
        params = {"tenant": tenant, "invoice": invoice_id, "note": credit_note_id,
                  "since": since}  # fmt: skip
        headers = self._client.query(
            f"SELECT {_HEADER} FROM {self._table('credit_notes')} FINAL WHERE {where} "
            "ORDER BY tenant, number",
            parameters=params,
        ).result_rows
        if not headers:
            return []
        lines = self._client.query(
            f"SELECT {_LINE} FROM {self._table('credit_note_lines')} FINAL "
            "WHERE (tenant, number) IN {keys:Array(Tuple(String, UInt64))} ORDER BY line",
            parameters={"keys": [(h[0], h[1]) for h in headers]},
        ).result_rows
        by_note: dict[tuple[str, int], list[CreditLine]] = defaultdict(list)
        for tenant_of, number_of, *rest in lines:
            by_note[(tenant_of, number_of)].append(CreditLine(*rest))
        return [_note(h, by_note[(h[0], h[1])]) for h in headers]


def _note(header: Sequence[Any], lines: list[CreditLine]) -> CreditNote:
    (
        tenant,
        number,
        invoice_id,
        invoice_number,
        subscription,
        period,
        currency,
        reason,
        on,
        correction,
        written_at,
    ) = header
    return CreditNote(tenant, number, invoice_id, invoice_number, subscription, period, currency,
                      reason, on, tuple(lines), correction, as_utc(written_at))  # fmt: skip


def issue_credit_note(
    invoices: InvoiceLedger,
    credits: CreditLedger,
    invoice_id: str,
    asked: Mapping[int, Decimal | None] | None,
    *,
    reason: str,
    today: date,
) -> CreditNote:
    """Credit the lines ``asked`` of a finalized invoice (None: void all of it left) with
    the tenant's next credit note number, and store it. Run one at a time per tenant."""
    invoice = invoices.find(invoice_id)
    if invoice is None:
        raise CreditError(f"no invoice {invoice_id}")
    earlier = credits.notes(invoice.tenant, invoice_id=invoice_id)
    number = credits.last_number(invoice.tenant) + 1
    note = (void(invoice, reason=reason, number=number, credited=earlier, today=today)
            if asked is None else
            credit(invoice, asked, reason=reason, number=number, credited=earlier,
                   today=today))  # fmt: skip
    credits.write(note)
    return note
