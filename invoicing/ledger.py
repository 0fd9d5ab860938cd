"""Invoicing's store: invoices, written as revisions and read back as ``Invoice`` objects;
the runs that closed and finalized them; and the revenue figures read from them.

A revision's lines are written before its header, and readers take the lines of the
header's revision only, so a close interrupted between the two leaves the previous
revision in force and a retry rewrites the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pyarrow as pa

from base import metrics
from base.clickhouse import AMOUNT, TIMESTAMP, Connection, TableStore, and_tenant, as_utc
from base.settings import Settings
from invoicing.invoice import (
    FINALIZED,
    Invoice,
    InvoiceLine,
    Party,
    invoice_id,
    period_of_invoice_id,
)
from rating.money import plain
from rating.quote import TierPart
from subscriptions.model import Customer
from subscriptions.store import SubscriptionStore

_RATE = pa.decimal128(9, 4)

_HEADER_COLUMNS = (
    "invoice_id, tenant, period_start, subscription, customer, currency, tax_rate, status, "
    "revision, computed_at, finalized_at, anchor_day, number, issued_on, due_on, seller, bill_to, "
    "tax_rule"
)
_LINE_COLUMNS = (
    "tenant, period_start, subscription, line, kind, item, group_key, plan, plan_version, "
    "applies_to, description, quantity, unit, currency, rated, amount, tax, breakdown"
)


RUN_COUNTS = ("created", "updated", "unchanged", "finalized", "already_final")


class InvoiceLedger(TableStore):
    def __init__(self, connection: Connection, subscriptions: SubscriptionStore) -> None:
        super().__init__(connection)
        self._subscriptions = subscriptions  # whose customers' names an invoice shows

    def write(self, invoices: Sequence[Invoice]) -> None:
        """Each invoice under its ``revision``: lines first, then the headers that make
        them current."""
        if not invoices:
            return
        lines = _lines_table(invoices)
        if lines.num_rows:
            self._client.insert_arrow(self._table("invoice_lines"), lines)
        self._client.insert_arrow(self._table("invoices"), _headers_table(invoices))

    def invoices(
        self,
        periods: Sequence[date],
        tenant: str | None = None,
        subscription: str | None = None,
        status: str | None = None,
        customers: Mapping[tuple[str, str], Customer] | None = None,
    ) -> list[Invoice]:
        """Current revisions of the invoices of ``periods``, with their lines, ordered by
        tenant, period and subscription; ``customers`` (for names), when the caller has
        them already, saves reading them again."""
        if not periods:
            return []
        where = "period_start IN {periods:Array(Date)}"
        if tenant is not None:
            where += " AND tenant = {tenant:String}"
        if subscription is not None:
            where += " AND subscription = {subscription:String}"
        params = {"periods": list(periods), "tenant": tenant, "subscription": subscription}
        headers = self._client.query(
            f"SELECT {_HEADER_COLUMNS} FROM {self._table('invoices')} FINAL WHERE {where} "
            "ORDER BY tenant, period_start, subscription",
            parameters=params,
        ).result_rows
        if status is not None:
            headers = [h for h in headers if h[7] == status]
        if not headers:
            return []
        lines = self._client.query(
            # FINAL: a close killed after writing lines and run again writes them twice,
            # and the copies fold only when ClickHouse merges.
            f"SELECT {_LINE_COLUMNS} FROM {self._table('invoice_lines')} FINAL "
            f"WHERE {where} AND (tenant, period_start, subscription, revision) IN "
            f"(SELECT tenant, period_start, subscription, revision "
            f"FROM {self._table('invoices')} FINAL WHERE {where}) "
            "ORDER BY tenant, period_start, subscription, line",
            parameters=params,
        ).result_rows
        by_invoice: dict[tuple[str, date, str], list[InvoiceLine]] = defaultdict(list)
        for row in lines:
            by_invoice[(row[0], row[1], row[2])].append(_line(row))
        if customers is None:
            customers = self._subscriptions.customers(tenant)
        return [_invoice(h, by_invoice[(h[1], h[2], h[3])], customers) for h in headers]

    def changed_since(self, since: datetime) -> list[Invoice]:
        """Invoices whose current revision was computed or finalized at or after ``since``."""
        keys = self._client.query(
            f"SELECT tenant, period_start, subscription FROM {self._table('invoices')} FINAL "
            "WHERE computed_at >= {since:DateTime64(3, 'UTC')} "
            "OR finalized_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"since": since},
        ).result_rows
        by_tenant: dict[str, set[tuple[date, str]]] = defaultdict(set)
        for tenant, period, subscription in keys:
            by_tenant[tenant].add((period, subscription))
        return [
            invoice
            for tenant, wanted in sorted(by_tenant.items())
            for invoice in self.invoices(sorted({p for p, _ in wanted}), tenant)
            if (invoice.period, invoice.subscription) in wanted
        ]

    def finalized_periods(self, tenant: str | None = None) -> list[date]:
        """Every period with a finalized invoice (of ``tenant``), oldest first."""
        rows = self._client.query(
            f"SELECT DISTINCT period_start FROM {self._table('invoices')} FINAL "
            "WHERE status = 'finalized'" + and_tenant(tenant) + " ORDER BY period_start",
            parameters={"tenant": tenant},
        ).result_rows
        return [period for (period,) in rows]

    def by_number(self, tenant: str, number: int) -> Invoice | None:
        """The tenant's finalized invoice numbered ``number``."""
        found = self._client.query(
            f"SELECT period_start, subscription FROM {self._table('invoices')} FINAL "
            "WHERE tenant = {tenant:String} AND number = {number:UInt64} "
            "AND status = 'finalized' LIMIT 1",
            parameters={"tenant": tenant, "number": number},
        ).result_rows
        if not found:
            return None
        invoices = self.invoices([found[0][0]], tenant, found[0][1], FINALIZED)
        return invoices[0] if invoices else None

    def find(self, identifier: str) -> Invoice | None:
        period = period_of_invoice_id(identifier)
        if period is None:
            return None
        owner = self._client.query(
            f"SELECT tenant, subscription FROM {self._table('invoices')} "
            "WHERE period_start = {period:Date} AND invoice_id = {id:String} LIMIT 1",
            parameters={"period": period, "id": identifier},
        ).result_rows
        if not owner:
            return None
        tenant, subscription = owner[0]
        found = self.invoices([period], tenant, subscription)
        return found[0] if found else None

    def last_numbers(self, tenant: str | None = None) -> dict[str, int]:
        """Each tenant's last invoice number (of one tenant, or of all): the next finalized
        invoice takes the one after it."""
        rows = self._client.query(
            f"SELECT tenant, max(number) FROM {self._table('invoices')} FINAL "
            f"WHERE number > 0{and_tenant(tenant)} GROUP BY tenant",
            parameters={"tenant": tenant},
        ).result_rows
        return {str(found): int(last) for found, last in rows}

    def record_run(
        self, action: str, period: date, tenant: str | None, *, counts: Mapping[str, int],
        problems: int, at: datetime,
    ) -> None:  # fmt: skip
        """One row per close or finalize, with how many invoices it left in each state."""
        self._client.insert(
            self._table("invoice_runs"),
            [[at, action, period, tenant or "", *(counts[name] for name in RUN_COUNTS),
              problems]],
            column_names=["run_at", "action", "period_start", "tenant", *RUN_COUNTS, "problems"],
        )  # fmt: skip

    def runs(self) -> dict[str, tuple[int, datetime]]:
        """action -> (runs, time of the last run)."""
        rows = self._client.query(
            f"SELECT action, count(), max(run_at) FROM {self._table('invoice_runs')} "
            "GROUP BY action"
        ).result_rows
        return {action: (int(runs), as_utc(last)) for action, runs, last in rows}

    def largest(self, period: date, tenant: str | None, limit: int) -> (
        list[tuple[str, str, str, Decimal]]
    ):  # fmt: skip
        """The period's largest invoices: (tenant, subscription, currency, total)."""
        where = "period_start = {period:Date}" + and_tenant(tenant)
        rows = self._client.query(
            f"SELECT tenant, subscription, currency, total FROM {self._table('invoices')} FINAL "
            f"WHERE {where} ORDER BY total DESC, subscription LIMIT {{limit:UInt32}}",
            parameters={"period": period, "tenant": tenant, "limit": limit},
        ).result_rows
        return [(tenant, sub, currency, Decimal(total)) for tenant, sub, currency, total in rows]

    def revenue_by_plan(self, first: date, last: date, tenant: str | None) -> list[tuple[Any, ...]]:
        """Per period from ``first`` to ``last``, plan, currency and status: (period, plan,
        currency, status, subscriptions, amount, tax)."""
        rows = self._client.query(
            "SELECT period_start, plan, currency, status, sum(subscriptions), sum(amount), "
            f"sum(tax) FROM {self._table('revenue_by_plan_month')} "
            "WHERE period_start >= {first:Date} AND period_start <= {last:Date}"
            + and_tenant(tenant)
            + " GROUP BY period_start, plan, currency, status ORDER BY period_start, plan, status",
            parameters={"first": first, "last": last, "tenant": tenant},
        ).result_rows
        return [tuple(row) for row in rows]


def measure_runs(connection: Connection) -> None:
    """Set the invoice-run gauges from the ledger: closes and finalizes are short CLI
    processes Prometheus never sees, so the worker reports them (``run_worker``)."""
    for action, (runs, last) in (
        InvoiceLedger(connection, SubscriptionStore(connection)).runs().items()
    ):
        metrics.INVOICE_RUNS.labels(action).set(runs)
        metrics.INVOICE_LAST_RUN.labels(action).set(last.timestamp())


def _invoice(
    header: Sequence[Any], lines: list[InvoiceLine], customers: Mapping[tuple[str, str], Customer]
) -> Invoice:
    (
        _,
        tenant,
        period,
        subscription,
        customer,
        currency,
        rate,
        status,
        revision,
        at,
        final,
        anchor,
        number,
        issued_on,
        due_on,
        seller,
        bill_to,
        tax_rule,
    ) = header
    who = customers.get((tenant, customer))
    # An issued invoice shows the parties as they were; a draft, the customer as it is.
    billed = _party(bill_to) if bill_to else party_of(who)
    return Invoice(
        tenant=tenant, subscription=subscription, customer=customer, period=period,
        currency=currency, tax_rate=rate, lines=tuple(lines), status=status,
        revision=revision, computed_at=as_utc(at), finalized_at=as_utc(final) if final else None,
        anchor_day=anchor,
        customer_name=billed.name or (who.name if who else ""),
        external_id=who.external_id if who else "", number=number, issued_on=issued_on,
        due_on=due_on, seller=_party(seller) if seller else Party(), bill_to=billed,
        tax_rule=tax_rule,
    )  # fmt: skip


def seller_of(settings: Settings) -> Party:
    """Who issues the invoices, from settings."""
    return Party(settings.seller_name, settings.seller_address, settings.seller_tax_id)


def party_of(customer: Customer | None) -> Party:
    """The party an invoice bills: the customer's name, address and tax id."""
    if customer is None:
        return Party()
    return Party(customer.name, customer.address, customer.tax_id)


_party_decoder = msgspec.json.Decoder(Party)


def _party(text: str) -> Party:
    return _party_decoder.decode(text)


def _party_text(party: Party) -> str:
    return "" if party == Party() else msgspec.json.encode(party).decode()


_parts = msgspec.json.Decoder(list[tuple[str, str, str, str, str]])


def _line(row: Sequence[Any]) -> InvoiceLine:
    (_, _, _, _, kind, item, group, plan, version, applies_to, description, quantity, unit,
     currency, rated, amount, tax, breakdown) = row  # fmt: skip
    parts = tuple(
        TierPart(label, Decimal(units), Decimal(price), Decimal(flat), Decimal(total))
        for label, units, price, flat, total in (_parts.decode(breakdown) if breakdown else [])
    )
    return InvoiceLine(
        kind=kind, item=item, group=group, plan=plan, plan_version=version,
        applies_to=applies_to, description=description, quantity=quantity, unit=unit,
        currency=currency, rated=rated, amount=amount, tax=tax, breakdown=parts,
    )  # fmt: skip


def _encode_parts(parts: tuple[TierPart, ...]) -> str:
    if not parts:
        return ""
    return msgspec.json.encode(
        [[p.label, plain(p.units), plain(p.unit_price), plain(p.flat_fee), plain(p.amount)]
         for p in parts]
    ).decode()  # fmt: skip


def _money(values: Sequence[Decimal]) -> pa.Array:
    return pa.array(values, type=AMOUNT)


def _headers_table(invoices: Sequence[Invoice]) -> pa.Table:
    now = datetime.now(UTC)
    return pa.table(
        {
            "invoice_id": [invoice_id(i.tenant, i.subscription, i.period) for i in invoices],
            "tenant": [i.tenant for i in invoices],
            "period_start": pa.array([i.period for i in invoices], type=pa.date32()),
            "subscription": [i.subscription for i in invoices],
            "customer": [i.customer for i in invoices],
            "currency": [i.currency for i in invoices],
            "tax_rate": pa.array([i.tax_rate for i in invoices], type=_RATE),
            "status": [i.status for i in invoices],
            "subtotal": _money([i.subtotal for i in invoices]),
            "tax": _money([i.tax for i in invoices]),
            "total": _money([i.total for i in invoices]),
            "line_count": pa.array([len(i.lines) for i in invoices], type=pa.uint32()),
            "digest": [i.digest for i in invoices],
            "revision": pa.array([i.revision for i in invoices], type=pa.uint64()),
            "computed_at": pa.array([i.computed_at or now for i in invoices], type=TIMESTAMP),
            "finalized_at": pa.array([i.finalized_at for i in invoices], type=TIMESTAMP),
            "anchor_day": pa.array([i.anchor_day for i in invoices], type=pa.uint8()),
            "number": pa.array([i.number for i in invoices], type=pa.uint64()),
            "issued_on": pa.array([i.issued_on for i in invoices], type=pa.date32()),
            "due_on": pa.array([i.due_on for i in invoices], type=pa.date32()),
            "seller": [_party_text(i.seller) for i in invoices],
            "bill_to": [_party_text(i.bill_to) if i.number else "" for i in invoices],
            "tax_rule": [i.tax_rule for i in invoices],
        }
    )


def _lines_table(invoices: Sequence[Invoice]) -> pa.Table:
    rows = [(i, number, line) for i in invoices for number, line in enumerate(i.lines, 1)]
    return pa.table(
        {
            "invoice_id": [i.invoice_id for i, _, _ in rows],
            "tenant": [i.tenant for i, _, _ in rows],
            "period_start": pa.array([i.period for i, _, _ in rows], type=pa.date32()),
            "subscription": [i.subscription for i, _, _ in rows],
            "revision": pa.array([i.revision for i, _, _ in rows], type=pa.uint64()),
            "line": pa.array([n for _, n, _ in rows], type=pa.uint32()),
            "kind": [line.kind for _, _, line in rows],
            "item": [line.item for _, _, line in rows],
            "group_key": [line.group for _, _, line in rows],
            "plan": [line.plan for _, _, line in rows],
            "plan_version": pa.array([line.plan_version for _, _, line in rows], pa.uint32()),
            "applies_to": pa.array([line.applies_to for _, _, line in rows], type=pa.date32()),
            "description": [line.description for _, _, line in rows],
            "quantity": _money([line.quantity for _, _, line in rows]),
            "unit": [line.unit for _, _, line in rows],
            "currency": [line.currency for _, _, line in rows],
            "rated": _money([line.rated for _, _, line in rows]),
            "amount": _money([line.amount for _, _, line in rows]),
            "tax": _money([line.tax for _, _, line in rows]),
            "breakdown": [_encode_parts(line.breakdown) for _, _, line in rows],
        }
    )
