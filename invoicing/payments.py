"""Payments and an invoice's payment state. Pure: the payments, credit notes and events
come in, the state and the matches go out.

What a finalized invoice asks of its customer is its total less what its credit notes
gave back. Its state, first that holds: ``written_off`` (collections gave up on it);
``paid`` (the payments reach what it asks); ``partially_paid``; ``failed`` (the last
payment attempt the provider reported failed); ``overdue`` (past its due day); ``due``.

A bank statement line pays the invoice whose number its reference names, when its amount
is what that invoice still asks or its total; any other line is left for a person, with
the reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from invoicing.credit_notes import CreditNote
from invoicing.invoice import Invoice

DUE, OVERDUE, PARTIALLY_PAID, PAID, FAILED, WRITTEN_OFF = (
    "due", "overdue", "partially_paid", "paid", "failed", "written_off"
)  # fmt: skip
STATES = (DUE, OVERDUE, PARTIALLY_PAID, PAID, FAILED, WRITTEN_OFF)


@dataclass(frozen=True)
class Payment:
    tenant: str
    payment_id: str
    invoice_id: str
    amount: Decimal
    currency: str
    received_on: date
    source: str  # "manual", "bank" or "provider"
    reference: str = ""


@dataclass(frozen=True)
class Standing:
    """Where one finalized invoice stands."""

    invoice: Invoice
    asked: Decimal  # its total less its credit notes
    paid: Decimal
    state: str
    last_paid_on: date | None

    @property
    def outstanding(self) -> Decimal:
        return max(self.asked - self.paid, Decimal(0)) if self.state != WRITTEN_OFF else Decimal(0)


def standing(
    invoice: Invoice,
    payments: Sequence[Payment],
    notes: Sequence[CreditNote],
    event: str,
    today: date,
) -> Standing:
    """``event``: the last collections event of the invoice ("failed", "written_off" or
    "" for none)."""
    asked = invoice.total - sum((n.total for n in notes), Decimal(0))
    paid = sum((p.amount for p in payments), Decimal(0))
    last = max((p.received_on for p in payments), default=None)
    if event == WRITTEN_OFF:
        state = WRITTEN_OFF
    elif paid >= asked:
        state = PAID
    elif paid > 0:
        state = PARTIALLY_PAID
    elif event == FAILED:
        state = FAILED
    elif invoice.due_on is not None and today > invoice.due_on:
        state = OVERDUE
    else:
        state = DUE
    return Standing(invoice, asked, paid, state, last)


@dataclass(frozen=True)
class StatementLine:
    number: int  # in the file, the header being 1
    on: date
    amount: Decimal
    reference: str


@dataclass(frozen=True)
class Match:
    line: StatementLine
    payment: Payment | None
    problem: str = ""  # why it pays nothing, when it does not


# A reference names an invoice by its id, or by its number after "invoice", "inv", "no." or
# "#" (a bare number could be a date or an amount).
_ID = re.compile(r"INV-\d{6}-[0-9A-F]{16}")
_NUMBER = re.compile(r"(?:INVOICE|INV|NO\.?|#)\s*[#:.\-]?\s*0*(\d{1,12})\b")


def named_invoices(reference: str, by_number: dict[int, Standing]) -> set[int]:
    """The numbers of the invoices of ``by_number`` that ``reference`` names."""
    text = reference.upper()
    by_id = {held.invoice.invoice_id: number for number, held in by_number.items()}
    named = {by_id[found] for found in _ID.findall(text) if found in by_id}
    named |= {int(found) for found in _NUMBER.findall(text) if int(found) in by_number}
    return named


def match_statement(
    tenant: str, lines: Sequence[StatementLine], standings: dict[int, Standing]
) -> list[Match]:
    """Each line, and the payment it is when its reference names one invoice of
    ``standings`` (by number) and its amount is what the invoice still asks or its total."""
    found = []
    for line in lines:
        numbers = sorted(named_invoices(line.reference, standings))
        if len(numbers) != 1:
            why = ("its reference names no invoice of this tenant" if not numbers
                   else "its reference names several invoices")  # fmt: skip
            found.append(Match(line, None, why))
            continue
        held = standings[numbers[0]]
        invoice = held.invoice
        if line.amount not in (held.asked - held.paid, invoice.total):
            found.append(Match(line, None, f"{line.amount} is neither what invoice No. "
                               f"{invoice.number_label} still asks ({held.asked - held.paid}) "
                               f"nor its total ({invoice.total})"))  # fmt: skip
            continue
        digest = hashlib.sha256(
            f"{tenant}|{line.on}|{line.amount}|{line.reference}".encode()
        ).hexdigest()[:16]
        found.append(Match(line, Payment(tenant, f"BANK-{digest}", invoice.invoice_id,
                                         line.amount, invoice.currency, line.on, "bank",
                                         line.reference)))  # fmt: skip
    return found


@dataclass(frozen=True)
class Collections:
    """Per currency, over a window of months: what was invoiced and collected, and now
    what is outstanding and lost."""

    currency: str
    invoiced: Decimal  # what the window's invoices ask (their totals less credit notes)
    collected: Decimal  # payments received in the window
    recovered: Decimal  # of those, paid after the invoice's due day (collections' work)
    outstanding: Decimal  # what every unpaid invoice still asks, as of today
    lost: Decimal  # written off
    dso: Decimal  # days sales outstanding: outstanding / invoiced x the window's days


def collections(
    held: Sequence[Standing], payments: Sequence[Payment], first: date, end: date
) -> list[Collections]:
    """For the days [first, end): invoices issued, payments received in it."""
    days = Decimal((end - first).days)
    due = {s.invoice.invoice_id: s.invoice.due_on for s in held}
    currencies = sorted({s.invoice.currency for s in held})
    found = []
    for cur in currencies:
        mine = [s for s in held if s.invoice.currency == cur]
        window = [s for s in mine if first <= (s.invoice.issued_on or date.min) < end]
        received = [p for p in payments if p.currency == cur and first <= p.received_on < end]
        invoiced = sum((s.asked for s in window), Decimal(0))
        outstanding = sum((s.outstanding for s in mine), Decimal(0))
        late = [p for p in received if (due.get(p.invoice_id) or p.received_on) < p.received_on]
        found.append(Collections(
            cur, invoiced, sum((p.amount for p in received), Decimal(0)),
            sum((p.amount for p in late), Decimal(0)), outstanding,
            sum((s.asked - s.paid for s in mine if s.state == WRITTEN_OFF), Decimal(0)),
            (outstanding / invoiced * days).quantize(Decimal("0.1")) if invoiced else Decimal(0),
        ))  # fmt: skip
    return found
