"""Prepaid credits on invoices. Pure: the grants and what earlier invoices used of them
come in, the invoice's credit and top-up lines go out.

A grant gives a customer (or one of its subscriptions) an amount in a currency, or so
many units of a meter (``meter``), from a day, until it expires; free, or paid, when its
price is billed once as a top-up line on the invoice of the period it takes effect in. A
grant in units is applied first, to its meter's usage lines: the invoice bills the meter
as if that many fewer units were used, and only the units that lower the bill are taken
(units inside an allowance cost nothing, so they are not spent). Grants usable on an
invoice (its customer and subscription, its currency, in effect during its period, not
expired before it starts, not voided) are applied in their declared order (priority,
then the soonest to expire, then the oldest, then by id) to what the invoice bills before
tax, each as a line of its own, never taking the invoice below zero. A grant's balance
is its amount less what invoices of earlier periods, and of this period's subscriptions
before this one (in id order), took of it: closing periods in order applies each grant
once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from invoicing.invoice import CREDIT, TOP_UP, USAGE, InvoiceLine
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit, trimmed
from rating.period import Period
from rating.plans import Allowance, Plan
from subscriptions.model import Subscription

FREE, PAID = "free", "paid"
ROLLOVER = "rollover"  # included units a period left unused, carried into the next


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
    meter: str = ""  # a grant in this meter's units (``amount`` is units); "": in currency

    def order(self) -> tuple[int, date, date, str]:
        return (self.priority, self.expires_on or date.max, self.effective_from, self.grant_id)

    def usable(self, sub: Subscription, currency: str, period: Period) -> bool:
        return (not self.voided and self.customer == sub.customer
                and self.subscription in ("", sub.subscription)
                and (self.currency == currency or (self.meter != "" and not self.currency))
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


# What a usage line's top units are worth: (units that lower its bill, of at most the
# units asked; the amount they take off, exact), ``invoicing.charges.unit_credit``.
UnitValue = Callable[[InvoiceLine, Decimal], tuple[Decimal, Decimal]]


def consumed(line: InvoiceLine) -> Decimal:
    """What a credit line took of its grant: units for a grant in units (its quantity),
    else money (its amount, negative on the invoice)."""
    return line.quantity if line.quantity else -line.amount


def credit_lines(
    lines: Sequence[InvoiceLine],
    grants: Sequence[Grant],
    used: Mapping[str, Decimal],
    *,
    sub: Subscription,
    currency: str,
    period: Period,
    unit_value: UnitValue | None = None,
) -> list[InvoiceLine]:
    """The credits applied to an invoice billing ``lines`` (before tax): grants in units
    first, then grants in money, each in order, up to its balance (its amount less
    ``used``) and what is left to bill."""
    due = sum((line.amount for line in lines), Decimal(0))
    usable = sorted((g for g in grants if g.usable(sub, currency, period)), key=Grant.order)
    applied = []
    if unit_value is not None:
        for grant in (g for g in usable if g.meter):
            left = grant.amount - used.get(grant.grant_id, Decimal(0))
            found, due = _in_units(grant, left, lines, due, currency=currency, period=period,
                                   unit_value=unit_value)  # fmt: skip
            applied += found
    for grant in (g for g in usable if not g.meter):
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


def _in_units(
    grant: Grant,
    left: Decimal,
    lines: Sequence[InvoiceLine],
    due: Decimal,
    *,
    currency: str,
    period: Period,
    unit_value: UnitValue,
) -> tuple[list[InvoiceLine], Decimal]:
    """A grant in units with ``left`` of them, over its meter's usage lines of the period
    in line order: the credit lines, and what is left to bill after them."""
    digits = MINOR_UNIT_DIGITS[currency]
    found = []
    for line in lines:
        if left <= 0 or due <= 0:
            break
        if line.kind != USAGE or line.item != grant.meter or line.applies_to != period.label:
            continue
        units, worth = unit_value(line, min(left, line.quantity))
        take = min(round_to_minor_unit(worth, digits), due)
        if units <= 0 or take <= 0:
            continue
        left -= units
        due -= take
        found.append(InvoiceLine(
            CREDIT, grant.grant_id, line.group, line.plan, line.plan_version, period.label,
            f"credit applied{_for(grant)}: {trimmed(units)} {line.unit} of "
            f"{trimmed(left + units)} left", units, line.unit, currency, -worth, -take,
        ))  # fmt: skip
    return found, due


def rollover_grants(sub: Subscription, period: Period, plan: Plan,
                    lines: Sequence[InvoiceLine]) -> list[Grant]:  # fmt: skip
    """The included units of ``plan`` (the version in force as the period ends) that its
    usage ``lines`` left unused, each allowance's at most its ``rollover``, as grants in
    units for the next period only. Each has an id of its own for (subscription, meter,
    period), so closing the period again replaces it; none left unused voids it."""
    made = []
    for charge in plan.charges:
        if not isinstance(charge, Allowance) or charge.rollover is None:
            continue
        used = sum((line.quantity for line in lines if line.kind == USAGE
                    and line.item == charge.meter and line.plan == plan.id
                    and line.plan_version == plan.version
                    and line.applies_to == period.label), Decimal(0))  # fmt: skip
        unused = min(max(charge.included - used, Decimal(0)), charge.rollover)
        following = period.shifted(1)
        key = f"{sub.tenant}/{sub.subscription}/{charge.meter}/{period.label}"
        made.append(Grant(
            sub.tenant, "RO-" + hashlib.sha256(key.encode()).hexdigest()[:12].upper(),
            sub.customer, sub.subscription, plan.currency, unused, 0, following.start,
            following.end, ROLLOVER, Decimal(0),
            f"{charge.meter} included in {period.label:%Y-%m} and not used",
            voided=unused == 0, meter=charge.meter,
        ))  # fmt: skip
    return made


def _for(grant: Grant) -> str:
    return f" ({grant.reason})" if grant.reason else ""


class GrantError(ValueError):
    """The grant cannot be made as asked; the message says why."""


def checked_grant(grant: Grant, scale: int | None = None) -> Grant:
    """``grant`` if it can be made: an amount above 0 and a price of 0 or more, both in
    whole minor units of a currency meterline bills in (a grant in units: its units in
    the meter's ``scale``, and a currency only if it is paid or kept to one), and an
    expiry after its start."""
    numbers = [("amount", grant.amount), ("price", grant.price)]
    if grant.meter:
        if scale is None:
            raise GrantError(f"meter {grant.meter!r} is not in the price book")
        units = grant.amount
        if not units.is_finite() or units <= 0 or units != round(units, scale):
            raise GrantError(f"amount {units} is not a quantity of {grant.meter} above 0 with "
                             f"at most {scale} decimal places")  # fmt: skip
        numbers = [("price", grant.price)]
        if not grant.currency and grant.price:
            raise GrantError("a paid grant in units names the currency its price is in")
    digits = MINOR_UNIT_DIGITS.get(grant.currency)
    if digits is None and (grant.currency or not grant.meter):
        raise GrantError(f"currency {grant.currency!r} is not an ISO 4217 code meterline bills in")
    for name, number in numbers:
        exact = digits is None or round_to_minor_unit(number, digits) == number
        if not number.is_finite() or number < 0 or not exact:
            raise GrantError(f"{name} {number} is not 0 or more in whole minor units of "
                             f"{grant.currency}")  # fmt: skip
    if grant.amount <= 0:
        raise GrantError("a grant's amount is more than 0")
    if grant.expires_on is not None and grant.expires_on <= grant.effective_from:
        raise GrantError("a grant expires after it takes effect")
    if not grant.reason.strip():
        raise GrantError("a grant says why: give a reason")
    return grant
