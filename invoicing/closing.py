"""Closing a period: a draft invoice per subscription, recomputed until it is finalized.

``close`` writes a new revision only for drafts whose content changed, so a second run
with the same data writes nothing; ``finalize`` recomputes each draft from the data as it
is then and freezes it. A finalized invoice is never written again: usage of its period
that arrives later is billed as adjustment lines on the subscription's next invoice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from aggregation.model import RatedTotal
from invoicing.charges import Pricing
from invoicing.compose import Credits, EarlierPeriod, UnknownPlanError, compose_invoice
from invoicing.corrections import taken_back
from invoicing.credits import Grant, consumed, rollover_grants
from invoicing.grant_ledger import used_before
from invoicing.invoice import CREDIT, DRAFT, FINALIZED, Invoice, InvoiceLine, Party
from invoicing.ledger import party_of
from invoicing.sources import Sources
from invoicing.tax import TaxPolicy
from rating.period import Period, midnight
from rating.plans import PriceBook
from subscriptions.model import NET_DAYS, Customer, Owner, Subscription


class ClosingError(ValueError):
    """The period cannot be closed or finalized as asked; the message says why."""


@dataclass
class CloseReport:
    period: date
    action: str  # "close" or "finalize"
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    finalized: int = 0
    already_final: int = 0
    not_ended: int = 0  # left as drafts: periods from a later anchor day that have not ended
    problems: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.created + self.updated + self.finalized

    @property
    def counts(self) -> dict[str, int]:
        """How many invoices the run left in each state (``ledger.RUN_COUNTS``)."""
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "finalized": self.finalized, "already_final": self.already_final}  # fmt: skip


def lookback_periods(max_event_age_days: int) -> int:
    """How many earlier periods can still receive usage, and so need adjustments: an
    event is accepted up to ``max_event_age_days`` old, plus one period for a close that
    runs late."""
    return math.ceil(max_event_age_days / 28) + 1


def close_period(
    sources: Sources,
    book: PriceBook,
    period: date,
    *,
    tenant: str | None = None,
    finalize: bool = False,
    lookback: int = 3,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    seller: Party | None = None,
    only: Set[Owner] | None = None,
    taxes: TaxPolicy | None = None,
) -> CloseReport:
    """Draft (or, with ``finalize``, issue) the period's invoices; ``seller``: who issues
    them (``settings.seller_*``); ``only``: these subscriptions' alone (a correction's);
    ``taxes``: the rates and rules (``invoicing.tax``; by default, the built-in ones)."""
    now = clock()
    billing = Period.of(period)
    if finalize and billing.end > now.date():
        raise ClosingError(
            f"period {period:%Y-%m} has not ended (it ends {billing.end}): close it for "
            "drafts now, finalize it once it has ended"
        )
    report = CloseReport(billing.start, "finalize" if finalize else "close")
    ledger = sources.ledger
    customers = sources.subscriptions.customers(tenant)
    current = {
        (i.tenant, i.subscription): i
        for i in ledger.invoices([billing.start], tenant, customers=customers)
    }
    near = {billing.shifted(k).start for k in range(-lookback, lookback + 1) if k}
    # A corrected period may be older than the lookback: its owner's invoices from then on
    # are read too, for what they billed of it.
    corrected = {owner: days
                 for owner, days in sources.corrections.corrected_periods(tenant).items()
                 if only is None or owner in only}  # fmt: skip
    earliest = min((day for days in corrected.values() for day in days), default=billing.start)
    around = near | {Period(earliest).shifted(k).start
                     for k in range(_months(earliest, billing.start) + lookback + 1)}  # fmt: skip
    billed: dict[tuple[str, str, date], list[InvoiceLine]] = defaultdict(list)
    finalized_earlier: dict[Owner, list[date]] = defaultdict(list)
    for invoice in ledger.invoices(sorted(around - {billing.start}), tenant, status=FINALIZED,
                                   customers=customers):  # fmt: skip
        owner = (invoice.tenant, invoice.subscription)
        fixed = corrected.get(owner, set())
        if invoice.period not in near and not (fixed and invoice.period >= min(fixed)):
            continue
        if invoice.period < billing.start and (invoice.period in near or invoice.period in fixed):
            finalized_earlier[owner].append(invoice.period)
        for line in invoice.lines:
            billed[(*owner, line.applies_to)].append(line)
    for note in sources.credits.notes(tenant):
        owner = (note.tenant, note.subscription)
        if note.correction and note.period in finalized_earlier.get(owner, ()):
            credited = ledger.find(note.invoice_id)
            if credited is not None:
                billed[(*owner, note.period)].extend(taken_back(credited, [note]))
    rows = _rows_by_owner(sources, billing.start, tenant)
    # Only a finalized earlier period can need adjustments: read only those periods' totals.
    adjustable = {day for days in finalized_earlier.values() for day in days}
    earlier_rows = {day: _rows_by_owner(sources, day, tenant) for day in sorted(adjustable)}
    subscribers = {s.owner: s for s in sources.subscriptions.subscriptions(tenant)}
    pricing = Pricing.of(book)
    pricing.prepare([row for found in rows.values() for row in found])
    owners = sorted(
        owner
        for owner in {o for o, sub in subscribers.items() if _active_in(sub, billing.start)}
        | set(rows) | set(finalized_earlier)
        if only is None or owner in only
    )  # fmt: skip
    grants: dict[tuple[str, str], list[Grant]] = defaultdict(list)
    for grant in sources.grants.grants(tenant):
        grants[(grant.tenant, grant.customer)].append(grant)
    used: dict[str, Decimal] = defaultdict(Decimal)
    if grants:
        used.update(used_before(sources.grants.applications(tenant), billing.start))
    first_of: dict[tuple[str, str], str] = {}
    for sub in sorted(subscribers.values(), key=lambda s: s.subscription):
        first_of.setdefault((sub.tenant, sub.customer), sub.subscription)
    to_write = []
    carried: list[Grant] = []  # included units left unused, for the next period
    for owner in owners:
        existing = current.get(owner)
        if existing is not None and existing.status == FINALIZED:
            report.already_final += 1
            _take(used, existing)
            continue
        sub = subscribers.get(owner) or _unregistered(owner, rows.get(owner, []), billing)
        if finalize and sub.period(billing.start).end > now.date():
            report.not_ended += 1
            freeze = False
        else:
            freeze = finalize
        before = [
            EarlierPeriod(day, earlier_rows[day].get(owner, []), billed[(*owner, day)])
            for day in finalized_earlier.get(owner, [])
        ]
        try:
            invoice = compose_invoice(
                billing.start, sub, customer=customers.get((sub.tenant, sub.customer)),
                rows=rows.get(owner, []), earlier=before, pricing=pricing, taxes=taxes,
                credits=_credits(grants.get((sub.tenant, sub.customer), []), used,
                                 first_of.get((sub.tenant, sub.customer), "")),
            )  # fmt: skip
        except UnknownPlanError as error:
            report.problems.append(str(error))
            continue
        _take(used, invoice)
        carried += _rollovers(book, sub, billing, invoice)
        if not invoice.lines and not _active_in(sub, billing.start):
            continue  # an earlier period's adjustments came to nothing
        unchanged = existing is not None and existing.digest == invoice.digest
        if unchanged and not freeze:
            report.unchanged += 1
            continue
        if freeze:
            report.finalized += 1
        elif existing is None:
            report.created += 1
        else:
            report.updated += 1
        to_write.append(
            replace(
                invoice,
                status=FINALIZED if freeze else DRAFT,
                revision=(existing.revision if existing else 0) + 1,
                computed_at=now,
                finalized_at=now if freeze else None,
            )
        )
    if finalize:
        to_write = issue(to_write, ledger.last_numbers(tenant), seller or Party(), customers,
                         now.date())  # fmt: skip
    # Before the invoices: a close killed between the two writes is run again, and its
    # rollovers are written again under the same ids.
    if carried:
        sources.grants.write(carried)
    ledger.write(to_write)
    ledger.record_run(report.action, report.period, tenant, counts=report.counts,
                      problems=len(report.problems), at=now)  # fmt: skip
    return report


def issue(
    invoices: Sequence[Invoice],
    last_numbers: Mapping[str, int],
    seller: Party,
    customers: Mapping[tuple[str, str], Customer],
    today: date,
) -> list[Invoice]:
    """The finalized ones of ``invoices`` as issued: each tenant's next numbers, gapless,
    in the order given (tenant, then subscription), today's date, the day it is due by its
    customer's payment terms (net 30 without a customer), and the parties as they are now.
    The ledger writes a run's headers in one insert, so a finalize killed part way leaves
    all of its numbers or none, and a rerun goes on from the last one."""
    numbers = dict(last_numbers)
    issued = []
    for invoice in invoices:
        if invoice.status != FINALIZED:
            issued.append(invoice)
            continue
        number = numbers[invoice.tenant] = numbers.get(invoice.tenant, 0) + 1
        customer = customers.get((invoice.tenant, invoice.customer))
        terms = customer.payment_terms_days if customer else NET_DAYS
        billed = party_of(customer)
        if not billed.name:
            billed = replace(billed, name=invoice.customer_name or invoice.customer)
        issued.append(replace(invoice, number=number, issued_on=today,
                              due_on=today + timedelta(days=terms), seller=seller,
                              bill_to=billed))  # fmt: skip
    return issued


def _credits(grants: list[Grant], used: dict[str, Decimal], first: str) -> Credits | None:
    """What a customer's invoice may use: its own grants and what was used of them."""
    if not grants:
        return None
    return Credits(grants, {g.grant_id: used[g.grant_id] for g in grants}, first)


def _rollovers(book: PriceBook, sub: Subscription, billing: Period, invoice: Invoice) -> (
    list[Grant]
):  # fmt: skip
    """The rollover grants the period leaves for the next, by the plan in force as it
    ends (none for a subscription that ended in it)."""
    last_day = billing.end - timedelta(days=1)
    if sub.active_until is not None and sub.active_until <= billing.end:
        return []
    plan = book.plan_at(sub.plan_at(midnight(billing.end) - timedelta(microseconds=1)),
                        last_day)  # fmt: skip
    return rollover_grants(sub, billing, plan, invoice.lines) if plan is not None else []


def _take(used: dict[str, Decimal], invoice: Invoice) -> None:
    """Count what ``invoice`` takes of each grant, for the subscriptions after it."""
    for line in invoice.lines:
        if line.kind == CREDIT:
            used[line.item] += consumed(line)


def _months(first: date, last: date) -> int:
    return (last.year - first.year) * 12 + last.month - first.month


def _rows_by_owner(sources: Sources, period: date, tenant: str | None) -> (
    dict[Owner, list[RatedTotal]]
):  # fmt: skip
    found: dict[Owner, list[RatedTotal]] = defaultdict(list)
    for row in sources.pipeline.rated_totals(period, tenant=tenant):
        found[(row.tenant, row.subscription)].append(row)
    return found


def _active_in(sub: Subscription, label: date) -> bool:
    """Whether the subscription is active during its period named ``label``."""
    period = sub.period(label)
    return sub.active_from < period.end and (
        sub.active_until is None or sub.active_until > period.start
    )


def _unregistered(owner: Owner, rows: Sequence[RatedTotal], period: Period) -> Subscription:
    """Usage of a subscription no longer registered is still billed (usage only)."""
    plan = rows[0].plan if rows else ""
    return Subscription(owner[0], owner[1], "", plan, midnight(period.end), midnight(period.end))
