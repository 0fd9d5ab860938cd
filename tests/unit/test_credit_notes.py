"""Credit notes' rules: what a line can be credited, the tax credited with it, voiding,
and what is refused with a reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.credit_notes import CreditError, CreditNote, credit, explain_credit, void
from invoicing.invoice import DRAFT, FINALIZED, USAGE, Invoice, InvoiceLine

TODAY = date(2026, 11, 3)


def line(amount: str, tax: str, kind: str = USAGE) -> InvoiceLine:
    return InvoiceLine(kind=kind, item="calls", group="", plan="p", plan_version=1,
                       applies_to=date(2026, 10, 1), description="calls", quantity=Decimal(1),
                       unit="call", currency="USD", rated=Decimal(amount),
                       amount=Decimal(amount), tax=Decimal(tax))  # fmt: skip


def invoice(*lines: InvoiceLine, status: str = FINALIZED) -> Invoice:
    return Invoice("t", "s", "c", date(2026, 10, 1), "USD", Decimal("8.25"), lines,
                   status=status, number=7)  # fmt: skip


INVOICE = invoice(line("100.00", "8.25"), line("10.01", "0.83"), line("-5.00", "-0.41"))


def test_a_line_is_credited_in_part_at_the_invoices_rate_and_the_rest_later_exactly() -> None:
    first = credit(INVOICE, {1: Decimal("33.33")}, reason="overbilled", number=1, credited=(),
                   today=TODAY)  # fmt: skip
    assert [(c.line, c.amount, c.tax) for c in first.lines] == [(1, Decimal("33.33"),
                                                                 Decimal("2.75"))]  # fmt: skip
    rest = credit(INVOICE, {1: None}, reason="the rest", number=2, credited=[first], today=TODAY)
    # The credit that takes the last of a line returns exactly the tax left on it.
    assert (rest.subtotal, rest.tax) == (Decimal("66.67"), Decimal("5.50"))
    assert (first.invoice_number, first.credit_note_id.startswith("CN-")) == (7, True)


def test_voiding_credits_all_that_is_left_of_every_line_it_billed() -> None:
    earlier = credit(INVOICE, {2: Decimal("1.00")}, reason="goodwill", number=1, credited=(),
                     today=TODAY)  # fmt: skip
    voided = void(INVOICE, reason="billed in error", number=2, credited=[earlier], today=TODAY)
    assert [(c.line, c.amount, c.tax) for c in voided.lines] == [
        (1, Decimal("100.00"), Decimal("8.25")), (2, Decimal("9.01"), Decimal("0.75")),
    ]  # fmt: skip
    with pytest.raises(CreditError, match="nothing left to credit"):
        void(INVOICE, reason="again", number=3, credited=[earlier, voided], today=TODAY)


@pytest.mark.parametrize(
    ("target", "asked", "reason", "problem"),
    [(invoice(line("1", "0"), status=DRAFT), {1: None}, "x", "is a draft"),
     (INVOICE, {1: None}, " ", "give a reason"),
     (INVOICE, {}, "x", "name the lines"),
     (INVOICE, {4: None}, "x", "there is no line 4"),
     (INVOICE, {3: None}, "x", "nothing left to credit"),
     (INVOICE, {1: Decimal("100.01")}, "x", "more than the 100.00 left"),
     (INVOICE, {1: Decimal("0.001")}, "x", "whole minor units"),
     (INVOICE, {1: Decimal("-1")}, "x", "more than 0")],
)  # fmt: skip
def test_a_credit_that_cannot_be_made_is_refused_with_its_reason(
    target: Invoice, asked: dict[int, Decimal | None], reason: str, problem: str
) -> None:
    with pytest.raises(CreditError, match=problem):
        credit(target, asked, reason=reason, number=1, credited=(), today=TODAY)


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(1, 10**9), rate=st.decimals(0, 100, places=2),
    parts=st.lists(st.integers(1, 10**9), min_size=1, max_size=6),
)  # fmt: skip
def test_crediting_a_line_in_any_parts_returns_exactly_its_amount_and_tax(
    amount: int, rate: Decimal, parts: list[int]
) -> None:
    billed = Decimal(amount).scaleb(-2)
    tax = (billed * rate / 100).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    target = replace(invoice(line(str(billed), str(tax))), tax_rate=rate)
    notes: list[CreditNote] = []
    for number, part in enumerate(parts, start=1):
        left = billed - sum((n.subtotal for n in notes), Decimal(0))
        if left <= 0:
            break
        asked = min(left, Decimal(part).scaleb(-2))
        notes.append(credit(target, {1: asked}, reason="part", number=number, credited=notes,
                            today=TODAY))  # fmt: skip
    if sum((n.subtotal for n in notes), Decimal(0)) < billed:
        notes.append(void(target, reason="rest", number=len(notes) + 1, credited=notes,
                          today=TODAY))  # fmt: skip
    assert sum((n.subtotal for n in notes), Decimal(0)) == billed
    assert sum((n.tax for n in notes), Decimal(0)) == tax
    assert all(c.tax >= 0 for n in notes for c in n.lines)


def test_a_credit_note_is_explained_from_what_was_billed_to_what_is_left() -> None:
    first = credit(INVOICE, {1: Decimal("40.00")}, reason="a", number=1, credited=(),
                   today=TODAY)  # fmt: skip
    second = credit(INVOICE, {1: Decimal("10.00")}, reason="b", number=2, credited=[first],
                    today=TODAY)  # fmt: skip
    facts = explain_credit(second, INVOICE, [first, second])
    assert "earlier credit notes took 40.00; this one credits 10.00 + tax 0.83" in facts[1]
    assert "50.00 is left to credit" in facts[1]
    assert facts[-1].endswith(f"comes to {INVOICE.total - first.total - second.total} USD")
