"""What a correction of usage does to one subscription's invoice for a closed period. Pure.

The period's lines are composed again from its corrected totals and compared, line by
line, with what was billed for it. On a finalized invoice, which never changes, a line
that now comes to less is credited by a credit note, as far as the line has anything
left to credit; whatever else differs (more usage, a true-up that grows as usage falls,
the part a credit could not take) is billed as an adjustment line on the subscription's
next open invoice, by the next close. A draft, or a period with no invoice yet, is
simply composed again.

A close counts a correction's credit notes as billed for their period (``billed``), so
each difference is billed once: by the credit note or by the adjustment, never both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from invoicing.compose import adjustments
from invoicing.credit_notes import CreditNote, credit
from invoicing.invoice import CREDIT, FINALIZED, TOP_UP, Invoice, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit


@dataclass(frozen=True)
class Change:
    """One line's difference for the period (as an adjustment line names it), and what of
    a decrease a credit note takes from the invoice's line ``credit_line`` (0: none)."""

    difference: InvoiceLine
    credit_line: int = 0
    credited: Decimal = Decimal(0)

    @property
    def adjusted(self) -> Decimal:
        """What an adjustment line bills: the difference less what is credited."""
        return self.difference.amount + self.credited


@dataclass(frozen=True)
class Effect:
    """A correction's effect on a subscription's period: ``status`` is that of its invoice
    (FINALIZED, DRAFT, or "" when the period has none yet)."""

    tenant: str
    subscription: str
    period: date
    invoice_id: str
    status: str
    currency: str
    tax_rate: Decimal
    changes: tuple[Change, ...]
    adjust_on: date | None = None  # finalized: the period whose open invoice bills the rest
    credit_tax: Decimal = Decimal(0)  # the tax its credit note gives back

    @property
    def credited(self) -> Decimal:
        return sum((c.credited for c in self.changes), Decimal(0))

    @property
    def adjusted(self) -> Decimal:
        return sum((c.adjusted for c in self.changes), Decimal(0))

    def adjustment_tax(self) -> Decimal:
        """The tax on the adjustments at the customer's rate, as the next invoice rounds it."""
        digits = MINOR_UNIT_DIGITS[self.currency]
        return sum((round_to_minor_unit(c.adjusted * self.tax_rate / 100, digits)
                    for c in self.changes if c.adjusted), Decimal(0))  # fmt: skip


def billed(invoice: Invoice, later: Sequence[Invoice], notes: Sequence[CreditNote]) -> (
    list[InvoiceLine]
):  # fmt: skip
    """Every line billed so far for a finalized invoice's period: its own lines, the
    adjustments finalized invoices since billed for it, and, as negative lines, what
    corrections' credit notes took back (a credit by hand is a concession, not usage)."""
    period = invoice.period
    lines = [line for line in invoice.lines if line.applies_to == period]
    lines += [line for other in later for line in other.lines if line.applies_to == period]
    # Prepaid credits and top-ups follow the grants, not usage: a correction leaves them.
    usage = [line for line in lines if line.kind not in (CREDIT, TOP_UP)]
    return usage + taken_back(invoice, notes)


def taken_back(invoice: Invoice, notes: Sequence[CreditNote]) -> list[InvoiceLine]:
    """What the corrections' credit notes among ``notes`` took back of ``invoice``'s lines,
    as negative lines of its period."""
    return [
        replace(invoice.lines[taken.line - 1], quantity=-taken.quantity, rated=-taken.amount,
                amount=-taken.amount, tax=-taken.tax)
        for note in notes if note.correction for taken in note.lines
    ]  # fmt: skip


def effect(
    now: Sequence[InvoiceLine],
    before: Sequence[InvoiceLine],
    *,
    period: date,
    invoice: Invoice | None,
    notes: Sequence[CreditNote],
    template: Effect,
) -> Effect:
    """The changes that bring ``before`` (what was billed, or what a draft bills) to
    ``now``; on a finalized ``invoice`` (with its credit ``notes``), decreases are credited
    as far as each line allows."""
    changes = []
    for difference in adjustments(now, before, period):
        number = _credit_line(invoice, difference) if difference.amount < 0 else 0
        if not number:
            changes.append(Change(difference))
            continue
        assert invoice is not None
        left = invoice.lines[number - 1].amount - sum(
            (c.amount for note in notes for c in note.lines if c.line == number), Decimal(0)
        )
        taken = min(-difference.amount, left)
        changes.append(Change(difference, number, taken) if taken > 0 else Change(difference))
    return replace(template, changes=tuple(changes))


def _credit_line(invoice: Invoice | None, difference: InvoiceLine) -> int:
    """The number of the finalized invoice's own line that ``difference`` corrects, or 0."""
    if invoice is None or invoice.status != FINALIZED:
        return 0
    for number, line in enumerate(invoice.lines, start=1):
        if line.key == difference.key and line.applies_to == invoice.period and line.amount > 0:
            return number
    return 0


def credit_note(
    found: Effect,
    invoice: Invoice,
    notes: Sequence[CreditNote],
    *,
    number: int,
    reason: str,
    correction: str,
    today: date,
) -> CreditNote | None:
    """The credit note of ``found``'s decreases on ``invoice`` (None when nothing is
    credited), each line with the quantity the correction took off it."""
    asked = {c.credit_line: c.credited for c in found.changes if c.credited}
    if not asked:
        return None
    note = credit(invoice, asked, reason=reason, number=number, credited=notes, today=today)
    taken = {c.credit_line: -c.difference.quantity for c in found.changes if c.credited}
    lines = tuple(replace(line, quantity=taken[line.line]) for line in note.lines)
    return replace(note, lines=lines, correction=correction)
