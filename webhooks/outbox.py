"""The outbox: messages made from what the store records since the last look, so that
no producer of a fact has to remember to send anything, and a crash anywhere loses
nothing (the facts are durable; a message is made again with the same id).

Each look reads the facts recorded from the cursor, less ``OVERLAP`` (a fact may become
visible a little after the moment it carries: a worker stamps a crossing before its
batch is written), keeps the messages not stored yet, and then moves the cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from aggregation.alert_store import AlertStore
from aggregation.model import Crossing
from base.clickhouse import Connection
from invoicing.credit_ledger import CreditLedger
from invoicing.credit_notes import CreditNote
from invoicing.grant_ledger import GrantLedger
from invoicing.invoice import FINALIZED, Invoice
from invoicing.ledger import InvoiceLedger
from rating.money import trimmed
from subscriptions.model import Change
from subscriptions.store import SubscriptionStore
from webhooks import messages as kinds
from webhooks.messages import Message, message
from webhooks.store import WebhookStore

OVERLAP = timedelta(minutes=10)
CURSOR = "outbox"


def derive(connection: Connection, now: datetime, low_percent: Decimal) -> list[Message]:
    """The messages made since the last look, stored; none while no endpoint exists
    (the cursor waits: an endpoint made later is not sent what came before it)."""
    store = WebhookStore(connection)
    endpoints = store.endpoints()
    if not endpoints:
        return []
    through = store.cursor(CURSOR)
    since = (through or min(e.created_at for e in endpoints)) - OVERLAP
    subscriptions = SubscriptionStore(connection)
    invoices = InvoiceLedger(connection, subscriptions).changed_since(since)
    made = [
        *map(_crossed, AlertStore(connection).crossings(since=since)),
        *_invoiced(invoices),
        *map(_credited, CreditLedger(connection).notes(since=since)),
        *map(_changed, subscriptions.changes_since(since)),
    ]
    if invoices or through is None or through.date() != now.date():
        made += _credits(GrantLedger(connection), since, now, low_percent)
    tenants = {e.tenant for e in endpoints}
    made = [m for m in made if m.tenant in tenants]
    known = store.known_messages([(m.tenant, m.id) for m in made])
    new = list({m.id: m for m in made if (m.tenant, m.id) not in known}.values())
    if new:
        store.write_messages(new)
    store.advance(CURSOR, now)
    return new


def _crossed(crossing: Crossing) -> Message:
    return message(crossing.tenant, kinds.ALERT_CROSSED, crossing.id, crossing.crossed_at, {
        "subscription": crossing.subscription, "rule": crossing.rule,
        "metric": crossing.metric, "threshold": trimmed(crossing.threshold),
        "value": trimmed(crossing.value), "period": f"{crossing.period:%Y-%m}",
        "crossing": crossing.id,
    })  # fmt: skip


def _invoice_data(invoice: Invoice) -> dict[str, object]:
    return {
        "invoice": invoice.invoice_id, "number": invoice.number_label,
        "subscription": invoice.subscription, "customer": invoice.customer,
        "period": f"{invoice.period:%Y-%m}", "currency": invoice.currency,
        "subtotal": trimmed(invoice.subtotal), "tax": trimmed(invoice.tax),
        "total": trimmed(invoice.total), "status": invoice.status,
        "due_on": invoice.due_on.isoformat() if invoice.due_on else None,
    }  # fmt: skip


def _invoiced(invoices: Iterable[Invoice]) -> Iterable[Message]:
    """Drafted once per invoice (its first draft; a later recompute is the same draft),
    finalized once."""
    for invoice in invoices:
        drafted_at = invoice.computed_at or invoice.finalized_at
        assert drafted_at is not None  # every stored invoice was computed
        yield message(invoice.tenant, kinds.INVOICE_DRAFTED, invoice.invoice_id, drafted_at,
                      {**_invoice_data(invoice), "status": "draft"})  # fmt: skip
        if invoice.status == FINALIZED and invoice.finalized_at is not None:
            yield message(invoice.tenant, kinds.INVOICE_FINALIZED, invoice.invoice_id,
                          invoice.finalized_at, _invoice_data(invoice))  # fmt: skip


def _credited(note: CreditNote) -> Message:
    written = note.written_at or datetime.combine(note.issued_on, time(), tzinfo=UTC)
    return message(note.tenant, kinds.INVOICE_CREDITED, note.credit_note_id, written, {
        "credit_note": note.credit_note_id, "number": note.number_label,
        "invoice": note.invoice_id, "invoice_number": f"{note.invoice_number:06d}",
        "subscription": note.subscription, "period": f"{note.period:%Y-%m}",
        "currency": note.currency, "total": trimmed(note.total), "reason": note.reason,
        "issued_on": note.issued_on.isoformat(),
    })  # fmt: skip


def _changed(change: Change) -> Message:
    fact = f"{change.subscription}\x1f{change.recorded_at.isoformat()}\x1f{change.kind}"
    return message(change.tenant, kinds.SUBSCRIPTION_CHANGED, fact, change.recorded_at, {
        "subscription": change.subscription, "change": change.kind, "plan": change.plan,
        "effective_at": change.effective_at.isoformat() if change.effective_at else None,
        "recorded_at": change.recorded_at.isoformat(), "detail": change.detail,
    })  # fmt: skip


def _credits(
    ledger: GrantLedger, since: datetime, now: datetime, low_percent: Decimal
) -> Iterable[Message]:
    """A grant whose balance is ``low_percent`` of its amount or below (once), and one that
    expired since the last look with a balance left (once); both as of when they are
    seen, so an endpoint made today hears of what is low today, not of last year's."""
    used = ledger.applications()
    for grant in ledger.grants():
        if grant.voided or not grant.amount:
            continue
        balance = grant.amount - sum((a.taken for a in used.get(grant.grant_id, [])),
                                     Decimal(0))  # fmt: skip
        data = {"grant": grant.grant_id, "customer": grant.customer,
                "subscription": grant.subscription, "currency": grant.currency,
                "meter": grant.meter, "amount": trimmed(grant.amount),
                "balance": trimmed(balance)}  # fmt: skip
        if balance * 100 <= grant.amount * low_percent:
            yield message(grant.tenant, kinds.CREDITS_LOW, grant.grant_id, now, data)
        ends = grant.expires_on
        if ends is not None and since.date() <= ends <= now.date() and balance > 0:
            yield message(grant.tenant, kinds.CREDITS_EXPIRED, grant.grant_id, now,
                          {**data, "expired_on": ends.isoformat()})  # fmt: skip
