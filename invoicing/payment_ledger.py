"""The store of payments and collections events, and where each finalized invoice stands."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa

from base.clickhouse import AMOUNT, TIMESTAMP, TableStore, and_tenant, as_utc
from invoicing.credit_ledger import CreditLedger
from invoicing.credit_notes import CreditNote
from invoicing.invoice import FINALIZED, Invoice
from invoicing.ledger import InvoiceLedger
from invoicing.payments import Payment, Standing, standing


class PaymentLedger(TableStore):
    def record(self, payments: Sequence[Payment]) -> None:
        """Payments, each once by its id: recorded again, one folds into the same row."""
        if not payments:
            return
        now = datetime.now(UTC)
        self._client.insert_arrow(self._table("payments"), pa.table({
            "tenant": [p.tenant for p in payments],
            "payment_id": [p.payment_id for p in payments],
            "invoice_id": [p.invoice_id for p in payments],
            "amount": pa.array([p.amount for p in payments], type=AMOUNT),
            "currency": [p.currency for p in payments],
            "received_on": pa.array([p.received_on for p in payments], type=pa.date32()),
            "source": [p.source for p in payments],
            "reference": [p.reference for p in payments],
            "recorded_at": pa.array([now] * len(payments), type=TIMESTAMP),
        }))  # fmt: skip

    def payments(
        self, tenant: str | None = None, invoice_id: str | None = None
    ) -> dict[str, list[Payment]]:
        """Every payment (of one invoice), by invoice id."""
        rows = self._client.query(
            "SELECT tenant, payment_id, invoice_id, amount, currency, received_on, source, "
            f"reference FROM {self._table('payments')} FINAL WHERE 1 = 1" + and_tenant(tenant)
            + _and_invoice(invoice_id),
            parameters={"tenant": tenant, "invoice": invoice_id},
        ).result_rows  # fmt: skip
        found: dict[str, list[Payment]] = defaultdict(list)
        for row in rows:
            found[row[2]].append(Payment(*row))
        return found

    def note(self, tenant: str, invoice_id: str, event: str, detail: str) -> None:
        """A collections event of an invoice (``payments.FAILED``, ``WRITTEN_OFF``, or ""
        to clear one): the latest wins."""
        now = datetime.now(UTC)
        self._client.insert(
            self._table("invoice_collection"),
            [[tenant, invoice_id, event, detail, now, int(now.timestamp() * 1_000_000)]],
            column_names=["tenant", "invoice_id", "event", "detail", "at", "version"],
        )

    def events(
        self, tenant: str | None = None, invoice_id: str | None = None
    ) -> dict[str, tuple[str, str, datetime]]:
        """invoice id -> (event, detail, when) of its latest collections event."""
        rows = self._client.query(
            f"SELECT invoice_id, event, detail, at FROM {self._table('invoice_collection')} "
            "FINAL WHERE 1 = 1" + and_tenant(tenant) + _and_invoice(invoice_id),
            parameters={"tenant": tenant, "invoice": invoice_id},
        ).result_rows
        return {invoice: (event, detail, as_utc(at)) for invoice, event, detail, at in rows}


def _and_invoice(invoice_id: str | None) -> str:
    return "" if invoice_id is None else " AND invoice_id = {invoice:String}"


def standing_now(
    credits: CreditLedger, payments: PaymentLedger, invoice: Invoice, today: date
) -> Standing:
    """Where one finalized invoice stands today, read for it alone."""
    ident = invoice.invoice_id
    event = payments.events(invoice.tenant, ident).get(ident)
    return standing(invoice, payments.payments(invoice.tenant, ident).get(ident, []),
                    credits.notes(invoice.tenant, invoice_id=ident), event[0] if event else "",
                    today)  # fmt: skip


def standings(
    invoices: InvoiceLedger,
    credits: CreditLedger,
    payments: PaymentLedger,
    tenant: str | None,
    today: date,
) -> list[Standing]:
    """Where every finalized invoice (of ``tenant``) stands today, by tenant and number."""
    paid = payments.payments(tenant)
    events = payments.events(tenant)
    notes: dict[str, list[CreditNote]] = defaultdict(list)
    for note in credits.notes(tenant):
        notes[note.invoice_id].append(note)
    issued = invoices.invoices(invoices.finalized_periods(tenant), tenant, status=FINALIZED)
    found = []
    for invoice in issued:
        event = events.get(invoice.invoice_id)
        found.append(standing(invoice, paid.get(invoice.invoice_id, []),
                              notes.get(invoice.invoice_id, []), event[0] if event else "",
                              today))  # fmt: skip
    return sorted(found, key=lambda s: (s.invoice.tenant, s.invoice.number))


class PaymentError(ValueError):
    """The payment cannot be recorded as asked; the message says why."""


def find_invoice(invoices: InvoiceLedger, tenant: str, named: str) -> Invoice:
    """A finalized invoice of ``tenant`` by its id or its number."""
    found = invoices.by_number(tenant, int(named)) if named.isdigit() else invoices.find(named)
    if found is None or found.tenant != tenant or found.status != FINALIZED:
        raise PaymentError(f"no finalized invoice {named} of tenant {tenant!r}")
    return found


def payment_of(invoice: Invoice, amount: Decimal, day: date, reference: str, source: str) -> (
    Payment
):  # fmt: skip
    """A payment of ``invoice``, its id a digest of what it is: recorded twice, it counts
    once."""
    if not amount.is_finite() or amount <= 0:
        raise PaymentError(f"a payment is more than 0, not {amount}")
    key = f"{invoice.invoice_id}|{amount}|{day}|{reference}".encode()
    ident = "PAY-" + hashlib.sha256(key).hexdigest()[:16]
    return Payment(invoice.tenant, ident, invoice.invoice_id, amount, invoice.currency, day,
                   source, reference)  # fmt: skip
