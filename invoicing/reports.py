"""Analytics for billing and finance, over the SQL views of migration 0008: usage by meter
and day, top subscriptions by amount, revenue by plan and month. Each returns plain rows
with exact decimals; the CLI draws them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from invoicing.store import Store
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


def _tenant_filter(tenant: str | None) -> str:
    return "" if tenant is None else " AND tenant = {tenant:String}"


def usage_by_day(
    store: Store, book: PriceBook, period: date, tenant: str | None = None
) -> list[DailyUsage]:
    billing = Period.of(period)
    rows = store.client.query(
        "SELECT meter, day, sum(events), sum(subscriptions), sum(quantity) "
        f"FROM {store.table('usage_daily')} "
        "WHERE day >= {start:Date} AND day < {end:Date}" + _tenant_filter(tenant) + " "
        "GROUP BY meter, day ORDER BY meter, day",
        parameters={"start": billing.start, "end": billing.end, "tenant": tenant},
    ).result_rows
    scales = {meter.id: meter.scale for meter in book.meters}
    return [
        DailyUsage(meter, day, int(events), int(subs),
                   Decimal(int(quantity)).scaleb(-scales.get(meter, 0)))
        for meter, day, events, subs, quantity in rows
    ]  # fmt: skip


def top_subscriptions(
    store: Store, period: date, tenant: str | None = None, limit: int = 10
) -> tuple[str, list[TopSubscription]]:
    """The largest invoices of the period when it has been closed (fees included), else
    the largest rated usage so far; the first value says which."""
    params = {"period": period, "tenant": tenant, "limit": limit}
    where = "period_start = {period:Date}" + _tenant_filter(tenant)
    invoiced = store.client.query(
        f"SELECT tenant, subscription, currency, total FROM {store.table('invoices')} FINAL "
        f"WHERE {where} ORDER BY total DESC, subscription LIMIT {{limit:UInt32}}",
        parameters=params,
    ).result_rows
    if invoiced:
        return "invoice totals", [TopSubscription(*row) for row in invoiced]
    rated = store.client.query(
        "SELECT tenant, subscription, currency, sum(amount) AS amount "
        f"FROM {store.table('rated_usage')} FINAL WHERE {where} "
        "GROUP BY tenant, subscription, currency "
        "ORDER BY amount DESC, subscription LIMIT {limit:UInt32}",
        parameters=params,
    ).result_rows
    return "rated usage so far (not yet closed)", [TopSubscription(*row) for row in rated]


def revenue_by_plan(
    store: Store, until: date, months: int, tenant: str | None = None
) -> list[PlanRevenue]:
    last = Period.of(until)
    rows = store.client.query(
        "SELECT period_start, plan, currency, status, sum(subscriptions), sum(amount), "
        f"sum(tax) FROM {store.table('revenue_by_plan_month')} "
        "WHERE period_start >= {first:Date} AND period_start <= {last:Date}"
        + _tenant_filter(tenant)
        + " GROUP BY period_start, plan, currency, status ORDER BY period_start, plan, status",
        parameters={
            "first": last.shifted(1 - months).start,
            "last": last.start,
            "tenant": tenant,
        },
    ).result_rows
    return [PlanRevenue(*row) for row in rows]
