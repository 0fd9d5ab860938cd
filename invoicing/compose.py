"""One subscription's invoice for a period: the period's own lines, adjustments for
earlier periods whose invoices were finalized before all their usage arrived, and tax.

A finalized invoice never changes. When an earlier period now comes to more (or less)
than was billed for it, on its own invoice and on any finalized adjustments since, the
difference is billed here, line by line, as an adjustment that names that period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from aggregation.model import RatedTotal
from invoicing.charges import Pricing, period_lines
from invoicing.credits import Grant, credit_lines, top_up_lines
from invoicing.invoice import CREDIT, TOP_UP, Invoice, InvoiceLine, LineKey, taxed
from invoicing.tax import TaxPolicy, built_in
from rating.currencies import MINOR_UNIT_DIGITS
from rating.plans import PriceBook
from subscriptions.model import Customer, Subscription


@dataclass(frozen=True)
class EarlierPeriod:
    """An earlier period of the subscription whose invoice is finalized: its rated totals
    as they are now, and every line billed for it so far."""

    period: date
    rows: Sequence[RatedTotal]
    billed: Sequence[InvoiceLine]


def compose_invoice(
    period: date,
    sub: Subscription,
    *,
    customer: Customer | None,
    rows: Sequence[RatedTotal],
    earlier: Sequence[EarlierPeriod],
    pricing: Pricing,
    taxes: TaxPolicy | None = None,
    credits: Credits | None = None,
) -> Invoice:
    lines = period_lines(period, sub, rows, pricing)
    for before in sorted(earlier, key=lambda e: e.period):
        now = period_lines(before.period, sub, before.rows, pricing)
        billed = [line for line in before.billed if line.kind not in (CREDIT, TOP_UP)]
        lines.extend(adjustments(now, billed, before.period))
    currency = _currency(sub, lines, pricing.book)
    if credits is not None:
        billing = sub.period(period)
        lines += top_up_lines(credits.grants, sub, credits.first_of_customer, billing)
        lines += credit_lines(lines, credits.grants, credits.used, sub=sub, currency=currency,
                              period=billing, unit_value=pricing.unit_credit)  # fmt: skip
    # The tax point: the last day of the period the invoice bills.
    rule = (taxes or built_in()).rule(customer, sub.period(period).end - timedelta(days=1))
    return Invoice(
        tenant=sub.tenant, subscription=sub.subscription, customer=sub.customer,
        period=period, currency=currency, tax_rate=rule.rate,
        lines=taxed(lines, rule.rate, MINOR_UNIT_DIGITS[currency]), anchor_day=sub.anchor_day,
        customer_name=customer.name if customer else "",
        external_id=customer.external_id if customer else "", tax_rule=rule.name,
    )  # fmt: skip


@dataclass(frozen=True)
class Credits:
    """The grants an invoice may use (``invoicing.credits``), what invoices before it took
    of each, and the customer's first subscription (which bills a customer's top-ups)."""

    grants: Sequence[Grant]
    used: Mapping[str, Decimal]
    first_of_customer: str = ""


def adjustments(
    now: Sequence[InvoiceLine], billed: Sequence[InvoiceLine], period: date
) -> list[InvoiceLine]:
    """Lines that bring what was billed for ``period`` to what it comes to ``now``."""
    current = {line.key: line for line in now}
    before: dict[LineKey, list[InvoiceLine]] = defaultdict(list)
    for old in billed:
        before[old.key].append(old)
    found = []
    for key in [*current, *(k for k in before if k not in current)]:
        new = current.get(key)
        earlier = before.get(key, [])
        template = new or earlier[0]
        amount = (new.amount if new else Decimal(0)) - _sum(e.amount for e in earlier)
        quantity = (new.quantity if new else Decimal(0)) - _sum(e.quantity for e in earlier)
        if not amount and not quantity:
            continue
        rated = (new.rated if new else Decimal(0)) - _sum(e.rated for e in earlier)
        found.append(
            replace(
                template,
                applies_to=period,
                description=f"adjustment for {period:%Y-%m}: {_base(template.description)}",
                quantity=quantity,
                rated=rated,
                amount=amount,
                tax=Decimal(0),
                breakdown=(),
            )
        )
    return found


def _base(description: str) -> str:
    adjusted = description.startswith("adjustment for ")
    return description.split(": ", 1)[1] if adjusted else description


def _sum(values: Any) -> Decimal:
    return sum(values, Decimal(0))


class UnknownPlanError(ValueError):
    """A subscription names a plan the price book no longer has, and has no usage to say
    in which currency to bill it."""


def _currency(sub: Subscription, lines: Sequence[InvoiceLine], book: PriceBook) -> str:
    if book.knows(sub.plan):
        return book.plan(sub.plan).currency
    if lines:
        return lines[0].currency
    raise UnknownPlanError(
        f"{sub.tenant}/{sub.subscription}: plan {sub.plan!r} is not in the price book"
    )
