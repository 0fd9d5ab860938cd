"""Prepaid credits on invoices. Pure: the grants and what earlier invoices used of them
come in, the invoice's credit and top-up lines go out.

A grant gives a customer (or one of its subscriptions) an amount in a currency, from a
day, until it expires; free, or paid, when its price is billed once as a top-up line on
the invoice of the period it takes effect in. Grants usable on an invoice (its customer
and subscription, its currency, in effect during its period, not expired before it
starts, not voided) are applied in their declared order (priority, then the soonest to
expire, then the oldest, then by id) to what the invoice bills before tax, each as a line
of its own, never taking the invoice below zero. A grant's balance is its amount less
what invoices of earlier periods, and of this period's subscriptions before this one (in
id order), took of it: closing periods in order applies each grant once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from invoicing.invoice import CREDIT, TOP_UP, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit, trimmed
from rating.period import Period
from subscriptions.model import Subscription

FREE, PAID = "free", "paid"


@dataclass(frozen=True)
class Grant:
    tenant: str
    grant_id: str
    customer: str
    subscription: str  # "" for any of the customer's subscriptions
    currency: str
    amount: Decimal
    priority: int = 0  # lower first
    effective_from: date = date.min
    expires_on: date | None = None  # exclusive: usable on periods that start before it
    kind: str = FREE
    price: Decimal = Decimal(0)  # what a paid grant costs, billed as a top-up
    reason: str = ""
    voided: bool = False

    def order(self) -> tuple[int, date, date, str]:
        return (self.priority, self.expires_on or date.max, self.effective_from, self.grant_id)

    def usable(self, sub: Subscription, currency: str, period: Period) -> bool:
        return (not self.voided and self.customer == sub.customer
                and self.subscription in ("", sub.subscription) and self.currency == currency
                and self.effective_from < period.end
                and (self.expires_on is None or self.expires_on > period.start))  # fmt: skip


def top_up_lines(
    grants: Sequence[Grant], sub: Subscription, first_of_customer: str, period: Period
) -> list[InvoiceLine]:
    """The price of each paid grant taking effect in ``period``, on the invoice of its
    subscription (a customer's grant: of the customer's first subscription by id)."""
    billed = [
        g for g in sorted(grants, key=Grant.order)
        if g.kind == PAID and g.price and not g.voided and g.customer == sub.customer
        and (g.subscription or first_of_customer) == sub.subscription
        and period.start <= g.effective_from < period.end
    ]  # fmt: skip
    return [InvoiceLine(TOP_UP, g.grant_id, "", "", 0, period.label,
                        f"prepaid credit: {trimmed(g.amount)} {g.currency}" + _for(g),
                        Decimal(0), "", g.currency, g.price, g.price) for g in billed]  # fmt: skip


def credit_lines(
    lines: Sequence[InvoiceLine],
    grants: Sequence[Grant],
    used: Mapping[str, Decimal],
    *,
    sub: Subscription,
    currency: str,
    period: Period,
) -> list[InvoiceLine]:
    """The credits applied to an invoice billing ``lines`` (before tax): each usable grant
    in order, up to its balance (its amount less ``used``) and what is left to bill."""
    due = sum((line.amount for line in lines), Decimal(0))
    applied = []
    for grant in sorted((g for g in grants if g.usable(sub, currency, period)), key=Grant.order):
        if due <= 0:
            break
        left = grant.amount - used.get(grant.grant_id, Decimal(0))
        take = min(left, due)
        if take <= 0:
            continue
        due -= take
        applied.append(InvoiceLine(
            CREDIT, grant.grant_id, "", "", 0, period.label,
            f"credit applied{_for(grant)}: {trimmed(take)} of {trimmed(left)} {currency} left",
            Decimal(0), "", currency, -take, -take,
        ))  # fmt: skip
    return applied


def _for(grant: Grant) -> str:
    return f" ({grant.reason})" if grant.reason else ""


class GrantError(ValueError):
    """The grant cannot be made as asked; the message says why."""


def checked_grant(grant: Grant) -> Grant:
    """``grant`` if it can be made: an amount above 0 and a price of 0 or more, both in
    whole minor units of a currency meterline bills in, and an expiry after its start."""
    digits = MINOR_UNIT_DIGITS.get(grant.currency)
    if digits is None:
        raise GrantError(f"currency {grant.currency!r} is not an ISO 4217 code meterline bills in")
    for name, number in (("amount", grant.amount), ("price", grant.price)):
        if not number.is_finite() or number < 0 or round_to_minor_unit(number, digits) != number:
            raise GrantError(f"{name} {number} is not 0 or more in whole minor units of "
                             f"{grant.currency}")  # fmt: skip
    if grant.amount <= 0:
        raise GrantError("a grant's amount is more than 0")
    if grant.expires_on is not None and grant.expires_on <= grant.effective_from:
        raise GrantError("a grant expires after it takes effect")
    if not grant.reason.strip():
        raise GrantError("a grant says why: give a reason")
    return grant
