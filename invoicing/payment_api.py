"""Payments reported over HTTP (``POST /v1/payments``), answered by whoever holds the
store: a payment received is recorded once, an attempt that failed is noted; the answer
is where the invoice stands then."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

import msgspec

from aggregation.handlers import Answer, PaymentReport, problem
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.payment_ledger import (
    PaymentError,
    PaymentLedger,
    find_invoice,
    payment_of,
    standing_now,
)
from invoicing.payments import FAILED, PAID
from invoicing.sources import Sources
from rating.plans import PriceBook

_report = msgspec.json.Decoder(PaymentReport)


def answer_payment(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """200 with the invoice's standing, 422 with why nothing was recorded."""
    asked = _report.decode(body)
    sources, kept = Sources.over(connection), PaymentLedger(connection)
    today = datetime.now(UTC).date()
    try:
        invoice = find_invoice(sources.ledger, asked.tenant, asked.invoice)
        held = standing_now(sources.credits, kept, invoice, today)
        if asked.failed:
            if not asked.reason.strip():
                raise PaymentError("a failed attempt says why: give a reason")
            if held.state == PAID:
                raise PaymentError(f"No. {invoice.number_label} is paid")
            kept.note(asked.tenant, invoice.invoice_id, FAILED, asked.reason.strip())
        else:
            try:
                amount = Decimal(asked.amount)
                day = date.fromisoformat(asked.received_on) if asked.received_on else today
            except (InvalidOperation, ValueError):
                raise PaymentError("amount is a decimal string and received_on a day "
                                   "(YYYY-MM-DD)") from None  # fmt: skip
            kept.record([payment_of(invoice, amount, day, asked.reference, "provider")])
    except PaymentError as error:
        return problem(422, "Unprocessable Content", str(error))
    now = standing_now(sources.credits, kept, invoice, today)
    answer = {"invoice_id": invoice.invoice_id, "number": invoice.number_label,
              "currency": invoice.currency, "asked": str(now.asked), "paid": str(now.paid),
              "outstanding": str(now.outstanding), "state": now.state}  # fmt: skip
    return Answer(200, "application/json", msgspec.json.encode(answer))
