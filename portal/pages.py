"""A customer's own space: their invoices and credit notes (to read and as PDFs) and their
usage this period, per meter with a chart by day. Server-rendered, one page per request.

A customer reaches it by a signed, expiring link (``base.signed_links``) that an admin
makes (``meterline customers portal-link``, or ``POST /v1/customers/{id}/portal-link``);
the link is the only key, so every page checks it, and everything a page shows is looked
up by the tenant and customer the link names: another customer's invoice answers 404,
as if it did not exist. Only issued documents are shown: a draft is not the customer's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from aggregation.handlers import Answer, PortalLink, problem
from aggregation.readers import PipelineReads
from aggregation.usage import read_usage
from base.clickhouse import Connection
from base.settings import Settings
from base.signed_links import Grant, LinkError, sign, verify
from invoicing import credit_export, export
from invoicing.credit_notes import CreditNote
from invoicing.invoice import FINALIZED, Invoice
from invoicing.sources import Sources
from rating.money import trimmed
from rating.period import Period
from rating.plans import PriceBook
from subscriptions.model import Subscription

HISTORY_MONTHS = 24  # how far back the portal lists invoices
MAX_DAYS = 90  # the longest a link may be valid

_pages = export.templates("portal")
_pages.filters.update(money=export.money, quantity=trimmed, decimal=Decimal)
_link = msgspec.json.Decoder(PortalLink)


class PortalLinkError(ValueError):
    """The link cannot be made as asked; the message says why."""


def make_link(
    connection: Connection, settings: Settings, asked: PortalLink, now: datetime
) -> tuple[str, datetime]:
    """The URL of ``asked``'s portal and when it expires; the customer must exist."""
    if not 1 <= asked.days <= MAX_DAYS:
        raise PortalLinkError(f"a portal link is valid for 1 to {MAX_DAYS} days, not {asked.days}")
    known = Sources.over(connection).subscriptions.customers(asked.tenant)
    if (asked.tenant, asked.customer) not in known:
        raise PortalLinkError(f"no customer {asked.customer!r} for tenant {asked.tenant!r}")
    expires = (now + timedelta(days=asked.days)).replace(microsecond=0)
    token = sign(Grant(asked.tenant, asked.customer, expires), settings.portal_key())
    return f"{settings.portal_url}/portal/{token}", expires


def answer_link(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """The handler of ``PORTAL_LINK``: 201 with the URL, 422 with why not."""
    try:
        url, expires = make_link(connection, settings, _link.decode(body), datetime.now(UTC))
    except PortalLinkError as error:
        return problem(422, "Unprocessable Content", str(error))
    answer = {"url": url, "expires_at": expires.isoformat()}
    return Answer(201, "application/json", msgspec.json.encode(answer))


def answer_page(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """The handler of ``PORTAL``: ``body`` is the path after /portal/."""
    token, _, rest = body.decode("utf-8", "replace").partition("/")
    try:
        grant = verify(token, settings.portal_key(), datetime.now(UTC))
    except LinkError as error:
        return _message(403, "This link cannot be opened", str(error))
    space = _Space.of(Sources.over(connection), book, grant)
    if not rest:
        return _html(200, space.home(PipelineReads(connection), token))
    kind, _, name = rest.partition("/")
    wants_pdf = name.endswith(".pdf")
    identifier = name.removesuffix(".pdf")
    if kind == "invoices":
        invoice = space.invoice(identifier)
        if invoice is not None:
            html = export.to_html([invoice])
            return _pdf(html) if wants_pdf else _html(200, html)
    elif kind == "credit-notes":
        note = space.credit_note(identifier)
        if note is not None:
            html = credit_export.to_html([note])
            return _pdf(html) if wants_pdf else _html(200, html)
    return _message(404, "Not found", f"there is no {kind or 'page'} {identifier} here")


@dataclass
class _Space:
    """What one customer's link shows, read by the tenant and customer it names."""

    sources: Sources
    book: PriceBook
    grant: Grant
    subscriptions: list[Subscription]
    customer_name: str

    @classmethod
    def of(cls, sources: Sources, book: PriceBook, grant: Grant) -> _Space:
        subs = [s for s in sources.subscriptions.subscriptions(grant.tenant)
                if s.customer == grant.customer]  # fmt: skip
        customer = sources.subscriptions.customers(grant.tenant).get((grant.tenant, grant.customer))
        return cls(sources, book, grant, subs, customer.name if customer else "")

    def invoices(self) -> list[Invoice]:
        """Issued invoices of the last ``HISTORY_MONTHS``, newest first."""
        this = Period.of(datetime.now(UTC).date())
        labels = [this.shifted(-k).start for k in range(HISTORY_MONTHS)]
        ledger, tenant = self.sources.ledger, self.grant.tenant
        found = [
            invoice
            for sub in self.subscriptions
            for invoice in ledger.invoices(labels, tenant, sub.subscription, FINALIZED)
        ]
        return sorted(found, key=lambda i: (i.period, i.number), reverse=True)

    def credit_notes(self) -> list[CreditNote]:
        mine = {sub.subscription for sub in self.subscriptions}
        return [n for n in self.sources.credits.notes(self.grant.tenant) if n.subscription in mine]

    def invoice(self, identifier: str) -> Invoice | None:
        found = self.sources.ledger.find(identifier)
        mine = {sub.subscription for sub in self.subscriptions}
        if found is None or found.tenant != self.grant.tenant or found.subscription not in mine:
            return None
        return found if found.status == FINALIZED else None

    def credit_note(self, identifier: str) -> CreditNote | None:
        return next((n for n in self.credit_notes() if n.credit_note_id == identifier), None)

    def home(self, reads: PipelineReads, token: str) -> str:
        today = datetime.now(UTC).date()
        usage = []
        for sub in self.subscriptions:
            period = sub.period(Period.of(today, sub.anchor_day).label)
            current = read_usage(reads, self.book, self.grant.tenant, sub.subscription,
                                 period.label)  # fmt: skip
            days = reads.daily_by_meter(self.grant.tenant, [sub.subscription], period.start,
                                        period.end)  # fmt: skip
            usage.append(_SubscriptionUsage(sub, period, current.lines,
                                            _charts(days, self.book, period)))  # fmt: skip
        return _pages.get_template("home.html.j2").render(
            customer=self.customer_name or self.grant.customer, grant=self.grant,
            invoices=self.invoices(), notes=self.credit_notes(), usage=usage,
            base=f"/portal/{token}",
        )  # fmt: skip


@dataclass(frozen=True)
class _Bar:
    day: date
    quantity: Decimal
    height: float  # of the tallest, from 0 to 1


@dataclass(frozen=True)
class _Chart:
    meter: str
    unit: str
    bars: list[_Bar]
    total: Decimal


@dataclass(frozen=True)
class _SubscriptionUsage:
    subscription: Subscription
    period: Period
    lines: Sequence[Any]
    charts: list[_Chart]


def _charts(days: list[tuple[str, date, int]], book: PriceBook, period: Period) -> list[_Chart]:
    """A bar per day of the period so far, per meter: the day's quantity in its units."""
    by_meter: dict[str, dict[date, int]] = defaultdict(dict)
    for name, day, quantity in days:
        by_meter[name][day] = quantity
    charts = []
    last = min(period.end, datetime.now(UTC).date() + timedelta(days=1))
    span = [period.start + timedelta(days=k) for k in range((last - period.start).days)]
    for meter_id, per_day in sorted(by_meter.items()):
        meter = book.meter(meter_id)
        values = {day: Decimal(q).scaleb(-meter.scale) for day, q in per_day.items()}
        top = max(values.values(), default=Decimal(0)) or Decimal(1)
        bars = [_Bar(day, values.get(day, Decimal(0)), float(values.get(day, 0) / top))
                for day in span]  # fmt: skip
        charts.append(_Chart(meter_id, meter.unit, bars, sum(values.values(), Decimal(0))))
    return charts


def _html(status: int, page: str) -> Answer:
    return Answer(status, "text/html; charset=utf-8", page.encode())


def _pdf(html: str) -> Answer:
    from invoicing.pdf import pdf_of  # noqa: PLC0415 (loads Pango: only when a PDF is asked)

    return Answer(200, "application/pdf", pdf_of(html))


def _message(status: int, title: str, detail: str) -> Answer:
    page = _pages.get_template("message.html.j2").render(title=title, detail=detail)
    return _html(status, page)
