"""An invoice: who is billed for which period, its lines, tax and totals. Pure data.

Every line is rounded once, to the currency's minor unit (half up), and taxed on its
own at the customer's rate (rounded the same way); an invoice's subtotal, tax and total
are sums of its lines, so lines and totals always reconcile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from functools import cached_property
from typing import Protocol

from rating.money import plain, round_to_minor_unit
from rating.period import Period
from rating.quote import TierPart

USAGE, FIXED_FEE, TRUE_UP, DISCOUNT = "usage", "fixed_fee", "true_up", "discount"
# A prepaid credit applied (negative), and a paid credit's price (``invoicing.credits``):
# they follow the grants, not the period's usage, so adjustments leave them alone.
CREDIT, TOP_UP = "credit", "top_up"
DRAFT, FINALIZED = "draft", "finalized"

LineKey = tuple[str, str, str, str, int]  # kind, item, group, plan, plan version


@dataclass(frozen=True)
class InvoiceLine:
    kind: str  # USAGE, FIXED_FEE, TRUE_UP, DISCOUNT, CREDIT or TOP_UP
    item: str  # the meter, the fee, "commitment", or the coupon
    group: str  # a grouped meter's group key (JSON), else ""
    plan: str
    plan_version: int
    applies_to: date  # the period billed: the invoice's own, or an earlier one (adjustment)
    description: str
    quantity: Decimal  # usage: in the meter's units; otherwise 0
    unit: str
    currency: str
    rated: Decimal  # exact, before rounding
    amount: Decimal  # rounded to the currency's minor unit
    tax: Decimal = Decimal(0)
    breakdown: tuple[TierPart, ...] = ()

    @property
    def key(self) -> LineKey:
        """What a line bills, across invoices: an adjustment shares the key of the line it
        corrects."""
        return (self.kind, self.item, self.group, self.plan, self.plan_version)

    def is_adjustment_on(self, period: date) -> bool:
        return self.applies_to != period


class _Line(Protocol):
    @property
    def amount(self) -> Decimal: ...
    @property
    def tax(self) -> Decimal: ...


class Totals:
    """The sums of a document's lines, each rounded already: they always reconcile."""

    lines: Sequence[_Line]

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def tax(self) -> Decimal:
        return sum((line.tax for line in self.lines), Decimal(0))

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax


@dataclass(frozen=True)
class Party:
    """Who issues an invoice, or whom it bills, as the issued invoice shows them."""

    name: str = ""
    address: str = ""  # lines separated by "\n"
    tax_id: str = ""


@dataclass(frozen=True)
class Invoice(Totals):
    tenant: str
    subscription: str
    customer: str
    period: date
    currency: str
    tax_rate: Decimal
    lines: tuple[InvoiceLine, ...]
    status: str = DRAFT
    revision: int = 0
    computed_at: datetime | None = None
    finalized_at: datetime | None = None
    anchor_day: int = 1  # the day of the month its period starts on
    customer_name: str = field(default="", compare=False)
    external_id: str = field(default="", compare=False)
    # Given when it is finalized (``closing.issue``): a draft has number 0 and no dates.
    number: int = field(default=0, compare=False)  # gapless per tenant, from 1
    issued_on: date | None = field(default=None, compare=False)
    due_on: date | None = field(default=None, compare=False)
    seller: Party = field(default=Party(), compare=False)
    bill_to: Party = field(default=Party(), compare=False)
    # The rule it was taxed by (``invoicing.tax``), which each of its lines names.
    tax_rule: str = ""

    @property
    def number_label(self) -> str:
        """Its legal number ("000042"), or "draft" before it is issued."""
        return f"{self.number:06d}" if self.number else "draft"

    @cached_property
    def invoice_id(self) -> str:
        return invoice_id(self.tenant, self.subscription, self.period)

    @property
    def billing(self) -> Period:
        """The days the invoice bills: its period, from its anchor day."""
        return Period.labelled(self.period, self.anchor_day)

    @cached_property
    def digest(self) -> str:
        """A fingerprint of what the invoice bills: equal digests, equal invoices, however
        often and whenever a draft is recomputed."""
        text = "\n".join(
            [self.invoice_id, self.customer, self.currency, _canonical(self.tax_rate)]
            + ([self.tax_rule] if self.tax_rule else [])
            + [
                "|".join((line.kind, line.item, line.group, line.plan, str(line.plan_version),
                          line.applies_to.isoformat(), line.description,
                          *map(_canonical, (line.quantity, line.rated, line.amount, line.tax))))
                for line in self.lines
            ]
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Decimal) -> str:
    """One text per number, whatever its scale: ClickHouse gives back 1.230000000 for 1.23."""
    return plain(value.normalize())


def invoice_id(tenant: str, subscription: str, period: date) -> str:
    """Stable for a subscription's period, so closing twice finds the same invoice; the
    period in the id lets a lookup go to its partition."""
    owner = hashlib.sha256(f"{tenant}/{subscription}".encode()).hexdigest()[:16].upper()
    return f"INV-{period:%Y%m}-{owner}"


def period_of_invoice_id(text: str) -> date | None:
    parts = text.split("-")
    if len(parts) != 3 or parts[0] != "INV" or len(parts[1]) != 6 or not parts[1].isdigit():
        return None
    year, month = int(parts[1][:4]), int(parts[1][4:])
    return date(year, month, 1) if 1 <= month <= 12 else None


def taxed(lines: list[InvoiceLine], rate: Decimal, minor_digits: int) -> tuple[InvoiceLine, ...]:
    """Each line with its own tax at ``rate`` percent, rounded like the line."""
    if not rate and not any(line.tax for line in lines):
        return tuple(lines)  # untaxed: the lines as they are (dataclasses.replace is slow)
    return tuple(
        replace(line, tax=round_to_minor_unit(line.amount * rate / 100, minor_digits))
        for line in lines
    )
