"""Analytics for billing and finance, over the SQL views of migration 0008: usage by meter
and day, top subscriptions by amount, revenue by plan and month, and revenue recognized
and deferred (``recognition``). Each returns plain rows with exact decimals; the CLI draws
them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from invoicing.charges import Pricing
from invoicing.invoice import FINALIZED
from invoicing.mrr import snapshot
from invoicing.recognition import (
    Entry,
    MonthBalance,
    Span,
    balances,
    credit_schedule,
    fee_spans,
    invoice_schedule,
    prepaid_schedule,
)
from invoicing.sources import Sources
from rating.period import Period
from rating.plans import PriceBook


@dataclass(frozen=True)
class DailyUsage:
    meter: str
    day: date
    events: int
    subscriptions: int
    quantity: Decimal  # in the meter's units


@dataclass(frozen=True)
class TopSubscription:
    tenant: str
    subscription: str
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class PlanRevenue:
    period: date
    plan: str
    currency: str
    status: str  # draft or finalized
    subscriptions: int
    amount: Decimal
    tax: Decimal


def usage_by_day(
    sources: Sources, book: PriceBook, period: date, tenant: str | None = None
) -> list[DailyUsage]:
    billing = Period.of(period)
    scales = {meter.id: meter.scale for meter in book.meters}
    return [
        DailyUsage(meter, day, events, subs, Decimal(quantity).scaleb(-scales.get(meter, 0)))
        for meter, day, events, subs, quantity in sources.pipeline.daily_usage(
            billing.start, billing.end, tenant
        )
    ]


def top_subscriptions(
    sources: Sources, period: date, tenant: str | None = None, limit: int = 10
) -> tuple[str, list[TopSubscription]]:
    """The largest invoices of the period when it has been closed (fees included), else
    the largest rated usage so far; the first value says which."""
    invoiced = sources.ledger.largest(period, tenant, limit)
    if invoiced:
        return "invoice totals", [TopSubscription(*row) for row in invoiced]
    rated = sources.pipeline.rated_by_subscription(period, tenant, limit)
    return "rated usage so far (not yet closed)", [TopSubscription(*row) for row in rated]


def revenue_by_plan(
    sources: Sources, until: date, months: int, tenant: str | None = None
) -> list[PlanRevenue]:
    last = Period.of(until)
    rows = sources.ledger.revenue_by_plan(last.shifted(1 - months).start, last.start, tenant)
    return [PlanRevenue(*row) for row in rows]


def revenue_recognition(
    sources: Sources, book: PriceBook, until: date, months: int, tenant: str | None = None
) -> tuple[list[MonthBalance], list[Entry]]:
    """Recognized and deferred revenue by month, plan and currency for the ``months`` to
    ``until``, and every entry of the schedule (of every finalized invoice and credit
    note: a deferred balance counts all that came before)."""
    last = Period.of(until)
    first = last.shifted(1 - months)
    ledger, pricing = sources.ledger, Pricing.of(book)
    subscribers = {s.owner: s for s in sources.subscriptions.subscriptions(tenant)}
    issued = ledger.invoices(ledger.finalized_periods(tenant), tenant, status=FINALIZED)
    spans: dict[str, dict[int, Span]] = {}
    entries: list[Entry] = []
    for invoice in issued:
        sub = subscribers.get((invoice.tenant, invoice.subscription))
        slices = [] if sub is None else [
            (part.plan.id, part.plan.version, fee.fee, (part.start, part.end))
            for part, fees in pricing.fees(sub, sub.period(invoice.period)) for fee in fees
        ]  # fmt: skip
        spans[invoice.invoice_id] = fee_spans(invoice, slices)
        entries += invoice_schedule(invoice, spans[invoice.invoice_id])
    grants = {grant.grant_id: grant for grant in sources.grants.grants(tenant)}
    entries += prepaid_schedule(issued, grants, datetime.now(UTC).date())
    by_id = {invoice.invoice_id: invoice for invoice in issued}
    for note in sources.credits.notes(tenant):
        credited = by_id.get(note.invoice_id)
        if credited is not None:
            entries += credit_schedule(note, credited, spans[note.invoice_id])
    return balances(entries, first.start, last.start), entries


@dataclass(frozen=True)
class AccountTotals:
    """One CRM account's billing: its subscriptions' recurring revenue on the month's last
    day and what its finalized invoices billed in the months, less credit notes."""

    tenant: str
    account: str  # the CRM's id (external_id), or "" for a customer without one
    customer: str
    name: str
    currency: str
    subscriptions: int
    mrr: Decimal
    invoiced: Decimal

    @property
    def arr(self) -> Decimal:
        return self.mrr * 12


def by_account(
    sources: Sources, book: PriceBook, until: date, months: int, tenant: str | None = None
) -> list[AccountTotals]:
    """Per CRM account (a customer's external_id) and currency, for the ``months`` to
    ``until``: MRR and ARR as ``report mrr`` counts them, and the invoiced subtotal."""
    last = Period.of(until)
    subscribers = sources.subscriptions.subscriptions(tenant)
    customers = sources.subscriptions.customers(tenant)
    owner_of = {(s.tenant, s.subscription): (s.tenant, s.customer) for s in subscribers}
    mrr: dict[tuple[tuple[str, str], str], Decimal] = defaultdict(Decimal)
    active: dict[tuple[tuple[str, str], str], int] = defaultdict(int)
    for owner, (currency, value) in snapshot(subscribers, book, last.end - timedelta(1)).items():
        mrr[(owner_of[owner], currency)] += value
        active[(owner_of[owner], currency)] += 1
    invoiced: dict[tuple[tuple[str, str], str], Decimal] = defaultdict(Decimal)
    labels = [last.shifted(-k).start for k in range(months)]
    issued = sources.ledger.invoices(labels, tenant, status=FINALIZED, customers=customers)
    for invoice in issued:
        invoiced[((invoice.tenant, invoice.customer), invoice.currency)] += invoice.subtotal
    by_id = {invoice.invoice_id: invoice for invoice in issued}
    for note in sources.credits.notes(tenant):
        credited = by_id.get(note.invoice_id)
        if credited is not None:
            invoiced[((credited.tenant, credited.customer), note.currency)] -= note.subtotal
    found = []
    for key in sorted(mrr.keys() | invoiced.keys()):
        (who, customer), currency = key
        known = customers.get((who, customer))
        found.append(AccountTotals(who, known.external_id if known else "", customer,
                                   known.name if known else "", currency, active[key],
                                   mrr[key], invoiced[key]))  # fmt: skip
    return sorted(found, key=lambda a: (a.tenant, a.account or "~", a.customer, a.currency))
