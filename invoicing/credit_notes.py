"""Credit notes: what corrects a finalized invoice, which itself never changes. A credit
note credits some of an invoice's lines, in whole or in part, for a reason; voiding an
invoice is a credit note for all of what is left of it. Pure rules; ``credit_ledger``
stores them.

A line can be credited up to what it billed less what earlier credit notes took from it.
Tax is credited at the invoice's rate, rounded like the line's own tax, except that the
credit that takes the last of a line returns exactly the tax left on it, so crediting a
line in parts returns exactly its tax. Numbers are gapless per tenant, a sequence apart
from invoices'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import cached_property

from invoicing.invoice import FINALIZED, Invoice, Totals
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import plain, round_to_minor_unit, trimmed


class CreditError(ValueError):
    """The credit note cannot be issued as asked; the message says why."""


@dataclass(frozen=True)
class CreditLine:
    line: int  # the credited invoice line's number, from 1
    kind: str
    item: str
    plan: str
    plan_version: int
    description: str
    amount: Decimal  # credited, positive, at the currency's minor unit
    tax: Decimal
    # By how much a correction took the line's quantity down (0 for a commercial credit).
    quantity: Decimal = Decimal(0)


@dataclass(frozen=True)
class CreditNote(Totals):
    tenant: str
    number: int  # gapless per tenant, from 1
    invoice_id: str
    invoice_number: int
    subscription: str
    period: date  # of the credited invoice
    currency: str
    reason: str
    issued_on: date
    lines: tuple[CreditLine, ...]
    correction: str = ""  # the correction of usage that issued it ("": credited by hand)
    written_at: datetime | None = field(default=None, compare=False)  # once stored

    @cached_property
    def credit_note_id(self) -> str:
        return credit_note_id(self.tenant, self.number)

    @property
    def number_label(self) -> str:
        return f"{self.number:06d}"


def credit_note_id(tenant: str, number: int) -> str:
    """Stable for a tenant's numbered note: a retried write lands on the same rows."""
    owner = hashlib.sha256(tenant.encode()).hexdigest()[:8].upper()
    return f"CN-{owner}-{number:06d}"


def credit(
    invoice: Invoice,
    asked: Mapping[int, Decimal | None],
    *,
    reason: str,
    number: int,
    credited: Sequence[CreditNote],
    today: date,
) -> CreditNote:
    """A credit note numbered ``number`` for ``invoice``: each line number in ``asked``
    credited by the amount given, or by all that is left of it (None). ``credited``: the
    invoice's earlier credit notes."""
    if invoice.status != FINALIZED:
        raise CreditError(
            f"{invoice.invoice_id} is a draft: correct it by closing the period again; only "
            "a finalized invoice is credited"
        )
    if not reason.strip():
        raise CreditError("a credit note says why: give a reason")
    if not asked:
        raise CreditError("name the lines to credit, or void the whole invoice")
    digits = MINOR_UNIT_DIGITS[invoice.currency]
    lines = []
    for number_of_line, wanted in sorted(asked.items()):
        if not 1 <= number_of_line <= len(invoice.lines):
            raise CreditError(f"{invoice.invoice_id} has lines 1 to {len(invoice.lines)}; "
                              f"there is no line {number_of_line}")  # fmt: skip
        line = invoice.lines[number_of_line - 1]
        taken = [c for note in credited for c in note.lines if c.line == number_of_line]
        amount_left = line.amount - _credited(credited, number_of_line)
        tax_left = line.tax - sum((c.tax for c in taken), Decimal(0))
        if line.amount <= 0 or amount_left <= 0:
            raise CreditError(
                f"line {number_of_line} of {invoice.invoice_id} has nothing left to credit "
                f"(it billed {line.amount}, credited {line.amount - amount_left} already)"
            )
        amount = amount_left if wanted is None else wanted
        if amount <= 0 or round_to_minor_unit(amount, digits) != amount:
            raise CreditError(
                f"line {number_of_line}: credit {amount} must be more than 0, in whole minor "
                f"units of {invoice.currency}"
            )
        if amount > amount_left:
            raise CreditError(f"line {number_of_line}: {amount} is more than the "
                              f"{amount_left} left to credit on it")  # fmt: skip
        rated_tax = round_to_minor_unit(amount * invoice.tax_rate / 100, digits)
        tax = tax_left if amount == amount_left else min(tax_left, rated_tax)
        lines.append(CreditLine(number_of_line, line.kind, line.item, line.plan,
                                line.plan_version, line.description, amount, tax))  # fmt: skip
    return CreditNote(invoice.tenant, number, invoice.invoice_id, invoice.number,
                      invoice.subscription, invoice.period, invoice.currency, reason.strip(),
                      today, tuple(lines))  # fmt: skip


def void(
    invoice: Invoice, *, reason: str, number: int, credited: Sequence[CreditNote], today: date
) -> CreditNote:
    """A credit note for all that is left of every line of ``invoice``."""
    left = {
        number_of_line: None
        for number_of_line, line in enumerate(invoice.lines, start=1)
        if line.amount > _credited(credited, number_of_line)
    }
    if not left:
        raise CreditError(f"{invoice.invoice_id} has nothing left to credit")
    return credit(invoice, left, reason=reason, number=number, credited=credited, today=today)


def _credited(credited: Sequence[CreditNote], line: int) -> Decimal:
    """What earlier credit notes took from the invoice's line ``line``."""
    return sum((c.amount for note in credited for c in note.lines if c.line == line), Decimal(0))


def explain_credit(note: CreditNote, invoice: Invoice, credited: Sequence[CreditNote]) -> list[str]:
    """The arithmetic of ``note``, line by line, from what ``invoice`` billed (``credited``:
    every credit note of the invoice, ``note`` among them, in number order)."""
    cur = invoice.currency
    digits = MINOR_UNIT_DIGITS[cur]

    def m(value: Decimal) -> str:
        return plain(round_to_minor_unit(value, digits))

    earlier = [n for n in credited if n.number < note.number]
    facts = [
        f"credits invoice No. {invoice.number_label} ({invoice.invoice_id}, "
        f"{invoice.period:%Y-%m}), issued {invoice.issued_on}: {m(invoice.subtotal)} + tax "
        f"{m(invoice.tax)} {cur}; reason: {note.reason}"
    ]
    for line in note.lines:
        billed = invoice.lines[line.line - 1]
        before = _credited(earlier, line.line)
        facts.append(
            f"line {line.line} ({billed.description}): billed {m(billed.amount)} + tax "
            f"{m(billed.tax)}; earlier credit notes took {m(before)}; this one credits "
            f"{m(line.amount)} + tax {m(line.tax)} (at {trimmed(invoice.tax_rate)}%, or the "
            f"tax left when it takes the last of the line); "
            f"{m(billed.amount - before - line.amount)} is left to credit"
        )
    after = sum((n.total for n in credited if n.number <= note.number), Decimal(0))
    facts.append(
        f"the invoice's {m(invoice.total)} {cur} less {m(after)} credited up to this note "
        f"comes to {m(invoice.total - after)} {cur}"
    )
    return facts
