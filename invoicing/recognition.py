"""Revenue recognition: when what finalized invoices and credit notes bill is earned. Pure.

The rules (docs/invoices.md, "Revenue recognition"):

- a fixed fee is earned ratably by day over the days it pays for (its plan version's slice
  of the period), so a period from the 15th to the 14th puts part of it in each month;
- usage, a commitment's true-up and a discount are earned in the period they belong to
  (the month that names it): usage where it was consumed;
- an adjustment line is earned in the period it adjusts, not on the invoice that bills it;
- a credit note takes back, with the same rule, from where the line it credits was earned;
- a paid top-up (the price of prepaid credit) is billed when its invoice is issued and
  earned as the credit is used: each finalized invoice's credit line of the grant earns
  its share of the price (the credit taken over the credit granted) in the month the
  line belongs to, and what is left when the grant expires or is voided is earned then
  (breakage); until then it is deferred.

Revenue is net of tax. Each part is rounded to the currency's minor unit so that the parts
of a line add up to the line exactly (the remainder goes where cumulative rounding puts
it), and so the schedule of an invoice sums to its subtotal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal

from invoicing.credit_notes import CreditNote
from invoicing.credits import Grant, consumed
from invoicing.invoice import CREDIT, FIXED_FEE, TOP_UP, Invoice, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit
from rating.period import Period

Span = tuple[date, date]  # the days [start, end) a fixed fee pays for


@dataclass(frozen=True)
class Entry:
    """Part of one document's line, earned in ``month``."""

    document: str  # the invoice's or the credit note's id
    line: int  # from 1
    kind: str
    plan: str
    currency: str
    service_start: date
    service_end: date  # exclusive
    month: date  # the first of the month it is earned in
    amount: Decimal  # negative for a credit note
    issued_on: date  # when the document was issued: when it is billed


def _month(day: date) -> date:
    return day.replace(day=1)


def spread(amount: Decimal, start: date, end: date, digits: int) -> list[tuple[date, Decimal]]:
    """``amount`` ratably by day over [start, end), per month, each part rounded so that
    the parts add up to ``amount`` exactly."""
    days = (end - start).days
    if days <= 0:
        return [(_month(start), amount)]
    parts = []
    done, given, day = 0, Decimal(0), start
    while day < end:
        following = Period(_month(day)).shifted(1).start
        stop = min(end, following)
        done += (stop - day).days
        reached = round_to_minor_unit(amount * done / days, digits) if stop < end else amount
        parts.append((_month(day), reached - given))
        given, day = reached, stop
    return parts


def _entries(
    document: str,
    number: int,
    line: InvoiceLine,
    amount: Decimal,
    *,
    span: Span | None,
    issued_on: date,
) -> list[Entry]:
    period = Period(line.applies_to)
    start, end = span or (period.start, period.end)
    if line.kind == FIXED_FEE and span is not None:
        parts = spread(amount, start, end, MINOR_UNIT_DIGITS[line.currency])
    else:
        parts = [(line.applies_to, amount)]
    return [Entry(document, number, line.kind, line.plan, line.currency, start, end, month,
                  part, issued_on) for month, part in parts if part]  # fmt: skip


def invoice_schedule(invoice: Invoice, spans: Mapping[int, Span]) -> list[Entry]:
    """When each line of a finalized ``invoice`` is earned; ``spans``: the days each of its
    own fixed fee lines pays for, by line number (the others have none). A top-up's line
    is earned as its credit is used (``prepaid_schedule``)."""
    issued = invoice.issued_on or invoice.period
    return [
        entry
        for number, line in enumerate(invoice.lines, start=1)
        if line.kind != TOP_UP
        for entry in _entries(
            invoice.invoice_id, number, line, line.amount, span=spans.get(number), issued_on=issued
        )
    ]


# Earned in no month yet: prepaid credit neither used nor expired.
NOT_YET = date(9999, 12, 1)


def prepaid_schedule(
    invoices: Sequence[Invoice], grants: Mapping[str, Grant], today: date
) -> list[Entry]:
    """When each paid top-up on the finalized ``invoices`` is earned: by the credit lines
    of its grant on them, in their months, each its share of the price rounded so that
    the shares add up (cumulatively), and the rest when the grant expires or is voided
    (as of ``today``), or in ``NOT_YET``."""
    taken: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for invoice in invoices:
        for line in invoice.lines:
            if line.kind == CREDIT:
                taken[line.item].append((line.applies_to, consumed(line)))
    found = []
    for invoice in invoices:
        for number, line in enumerate(invoice.lines, start=1):
            grant = grants.get(line.item) if line.kind == TOP_UP else None
            if grant is not None and grant.amount:
                made = Entry(invoice.invoice_id, number, TOP_UP, line.plan, line.currency,
                             grant.effective_from, grant.expires_on or NOT_YET, NOT_YET,
                             line.amount, invoice.issued_on or invoice.period)  # fmt: skip
                found += _earned(made, grant, taken[grant.grant_id], today)
    return found


def _earned(
    price: Entry, grant: Grant, taken: Sequence[tuple[date, Decimal]], today: date
) -> list[Entry]:
    """A top-up's ``price`` (an entry of all of it, earned ``NOT_YET``) by what invoices
    ``taken`` of its grant, month by month, and the rest at its end."""
    digits = MINOR_UNIT_DIGITS[price.currency]
    found = []
    used, given = Decimal(0), Decimal(0)
    for month, part in sorted(taken):
        used += part
        reached = round_to_minor_unit(price.amount * min(used, grant.amount) / grant.amount,
                                      digits)  # fmt: skip
        if reached != given:
            found.append(replace(price, month=_month(month), amount=reached - given))
        given = reached
    if given != price.amount:
        ends = grant.expires_on
        month = (_month(ends) if ends is not None and ends <= today
                 else _month(today) if grant.voided else NOT_YET)  # fmt: skip
        found.append(replace(price, month=month, amount=price.amount - given))
    return found


def credit_schedule(note: CreditNote, invoice: Invoice, spans: Mapping[int, Span]) -> list[Entry]:
    """What ``note`` takes back, from where the lines it credits were earned."""
    return [
        entry
        for credited in note.lines
        for entry in _entries(
            note.credit_note_id,
            credited.line,
            invoice.lines[credited.line - 1],
            -credited.amount,
            span=spans.get(credited.line),
            issued_on=note.issued_on,
        )
    ]


@dataclass(frozen=True)
class MonthBalance:
    month: date
    plan: str
    currency: str
    billed: Decimal  # issued that month (credit notes take off)
    recognized: Decimal  # earned that month
    # Billed to date less earned to date: above 0, billed ahead of the service (deferred);
    # below 0, earned and not billed yet (unbilled, as billing in arrears leaves it).
    deferred: Decimal


def balances(entries: Iterable[Entry], first: date, last: date) -> list[MonthBalance]:
    """Per month from ``first`` to ``last`` (firsts of months), plan and currency; the
    deferred balance counts every entry before ``first`` too."""
    billed: dict[tuple[str, str], dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    earned: dict[tuple[str, str], dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for entry in entries:
        key = (entry.plan, entry.currency)
        billed[key][_month(entry.issued_on)] += entry.amount
        earned[key][entry.month] += entry.amount
    found = []
    for key in sorted(set(billed) | set(earned)):
        before = sum((v for m, v in billed[key].items() if m < first), Decimal(0)) - sum(
            (v for m, v in earned[key].items() if m < first), Decimal(0)
        )
        month = first
        while month <= last:
            b, r = billed[key].get(month, Decimal(0)), earned[key].get(month, Decimal(0))
            before += b - r
            if b or r or before:
                found.append(MonthBalance(month, key[0], key[1], b, r, before))
            month = Period(month).shifted(1).start
    return sorted(found, key=lambda x: (x.month, x.currency, x.plan))


def month_end(month: date) -> date:
    """The last day of ``month``: the date a ledger books the month's entry on."""
    return Period(month).shifted(1).start - timedelta(days=1)


def fee_spans(invoice: Invoice, slices: Sequence[tuple[str, int, str, Span]]) -> dict[int, Span]:
    """The days each of ``invoice``'s own fixed fee lines pays for, matched in order to
    ``slices``: (plan, version, fee, span) of the subscription's period as composed."""
    left = list(slices)
    spans = {}
    for number, line in enumerate(invoice.lines, start=1):
        if line.kind != FIXED_FEE or line.applies_to != invoice.period:
            continue
        for k, (plan, version, fee, span) in enumerate(left):
            if (plan, version, fee) == (line.plan, line.plan_version, line.item):
                spans[number] = span
                del left[k]
                break
    return spans
