"""Current usage of one subscription, as billing dashboards and the usage API show it:
each rated total of the period so far, its quantity in the meter's units and its amount,
both exact and written as decimal strings (JSON numbers would pass through floats)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import msgspec

from aggregation.model import RatedTotal
from aggregation.readers import PipelineReads
from base.events import Property
from rating.money import plain
from rating.plans import PriceBook


class UsageLine(msgspec.Struct):
    """One rated total: a meter (and group) under one plan version, period to date."""

    meter: str
    group: dict[str, Property | None] | None
    plan: str
    plan_version: int
    quantity: str
    unit: str
    amount: str
    currency: str


class CurrentUsage(msgspec.Struct):
    """A subscription's period to date; ``totals`` per currency, before invoice rounding."""

    tenant: str
    subscription: str
    period: str
    lines: list[UsageLine]
    totals: dict[str, str]


def current_usage(
    tenant: str, subscription: str, period: date, rows: list[RatedTotal], book: PriceBook
) -> CurrentUsage:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    lines = []
    for row in rows:
        meter = book.meter(row.meter)
        totals[row.currency] += row.amount
        lines.append(
            UsageLine(
                meter=meter.id,
                group=msgspec.json.decode(row.group) if row.group else None,
                plan=row.plan,
                plan_version=row.plan_version,
                quantity=plain(Decimal(row.quantity).scaleb(-meter.scale)),
                unit=meter.unit,
                amount=plain(row.amount),
                currency=row.currency,
            )
        )
    return CurrentUsage(
        tenant, subscription, period.strftime("%Y-%m"), lines,
        {currency: plain(amount) for currency, amount in sorted(totals.items())},
    )  # fmt: skip


def read_usage(
    store: PipelineReads, book: PriceBook, tenant: str, subscription: str, period: date
) -> CurrentUsage:
    rows = store.rated_totals(period, tenant=tenant, subscription=subscription)
    return current_usage(tenant, subscription, period, rows, book)
