"""Corrections of closed periods, their pure parts: a period rated again from its events
equals the Decimal oracle over the corrected events, whatever is added or taken back;
and on a finalized invoice each line's difference is billed exactly once, by a credit
note as far as the line allows and by an adjustment for the rest."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.recompute import rerate, zero_rows
from base.events import UsageEvent
from invoicing.corrections import Effect, credit_note, effect
from invoicing.credit_notes import credit
from invoicing.invoice import FINALIZED, USAGE, Invoice, InvoiceLine
from meterline.demo import PRICE_BOOK
from rating import oracle
from rating.loading import load_price_book
from rating.table import ChargeTable
from subscriptions.directory import fixed
from subscriptions.model import Subscription

BOOK = load_price_book(PRICE_BOOK)
CHARGES = ChargeTable.compile(BOOK)
SUB = Subscription("acme", "a", "cust", "growth", datetime(2026, 1, 1, tzinfo=UTC), version=1)
TERMS = fixed({SUB.owner: SUB.terms()})
AUG = date(2026, 8, 1)


def expected_nanos(plan: str, meter: str, quantity: int) -> int:
    charge = BOOK.plan(plan, 1).charge_for(meter)
    assert charge is not None
    return int(oracle.rate_charge(charge, quantity, BOOK.meter(meter).scale).amount.scaleb(9))


quantities = st.lists(st.integers(0, 10**9), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(quantities=quantities, kept=st.data())
def test_a_period_rated_again_is_the_oracle_over_the_events_kept(
    quantities: list[int], kept: st.DataObject
) -> None:
    events = [
        UsageEvent(f"e{i}", "acme", "a", "api_calls", quantity,
                   datetime(2026, 8, 1 + i % 28, 12, tzinfo=UTC))
        for i, quantity in enumerate(quantities)
    ]  # fmt: skip
    keep = kept.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    remaining = [event for event, stays in zip(events, keep, strict=True) if stays]
    rated = rerate(remaining, TERMS, BOOK, CHARGES)
    assert not rated.refused
    if not remaining:
        assert len(rated.rows) == 0
        return
    (total,) = rated.rows
    assert total.quantity == sum(e.quantity for e in remaining)
    assert total.amount_nanos == expected_nanos("growth", "api_calls", total.quantity)
    assert total.events == len(remaining)


def test_a_total_left_without_events_is_rated_at_zero_and_a_refusal_is_named() -> None:
    five = UsageEvent("x", "acme", "a", "api_calls", 5, datetime(2026, 8, 3, tzinfo=UTC))
    (row,) = rerate([five], TERMS, BOOK, CHARGES).rows
    (zero,) = zero_rows([row.key], BOOK, CHARGES)
    assert (zero.quantity, zero.amount_nanos) == (0, expected_nanos("growth", "api_calls", 0))
    unknown = UsageEvent("y", "acme", "nobody", "api_calls", 5, datetime(2026, 8, 3, tzinfo=UTC))
    (refused,) = rerate([unknown], TERMS, BOOK, CHARGES).refused
    assert refused.reason == "unknown_subscription"


def line(amount: Decimal, quantity: int, item: str = "api_calls") -> InvoiceLine:
    return InvoiceLine(USAGE, item, "", "growth", 1, AUG, item, Decimal(quantity), "call", "USD",
                       amount, amount)  # fmt: skip


cents = st.integers(-100_000, 100_000).map(lambda c: Decimal(c).scaleb(-2))


@settings(max_examples=200, deadline=None)
@given(billed=st.lists(cents, min_size=1, max_size=4), now=st.data(), taken=st.data())
def test_each_difference_is_billed_once_by_a_credit_note_and_an_adjustment(
    billed: list[Decimal], now: st.DataObject, taken: st.DataObject
) -> None:
    items = [f"m{i}" for i in range(len(billed))]
    lines = tuple(line(amount, 10, item) for amount, item in zip(billed, items, strict=True))
    invoice = Invoice("acme", "a", "cust", AUG, "USD", Decimal("8.25"), lines, status=FINALIZED,
                      number=1)  # fmt: skip
    corrected = [line(now.draw(cents), 4, item) for item in items]
    # What earlier credit notes by hand took already, from lines that billed more than 0.
    by_hand = {
        n: taken.draw(st.integers(0, int(x.amount * 100)).map(lambda c: Decimal(c).scaleb(-2)))
        for n, x in enumerate(invoice.lines, start=1) if x.amount > 0
    }  # fmt: skip
    earlier = []
    asked = {n: amount for n, amount in by_hand.items() if amount > 0}
    if asked:
        earlier = [credit(invoice, asked, reason="goodwill", number=1, credited=(),
                          today=AUG)]  # fmt: skip
    template = Effect("acme", "a", AUG, invoice.invoice_id, FINALIZED, "USD", Decimal("8.25"), ())
    found = effect(corrected, list(invoice.lines), period=AUG, invoice=invoice, notes=earlier,
                   template=template)  # fmt: skip
    for change in found.changes:
        number = items.index(change.difference.item) + 1
        before, after = invoice.lines[number - 1].amount, corrected[number - 1].amount
        assert change.difference.amount == after - before
        assert -change.credited + change.adjusted == after - before, "billed exactly once"
        left = before - by_hand.get(number, Decimal(0))
        assert 0 <= change.credited <= max(left, Decimal(0))
        if change.credited:
            assert change.difference.amount < 0 and change.credit_line == number
    note = credit_note(found, invoice, earlier, number=2, reason="fix", correction="COR-1",
                       today=AUG)  # fmt: skip
    if note is not None:
        assert note.subtotal == found.credited and note.correction == "COR-1"
        assert all(x.quantity == 6 for x in note.lines)  # 10 billed, 4 now
    assert replace(found, changes=()) == template
