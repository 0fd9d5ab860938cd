"""The per-subscription invoice summary of a period, from rated period-to-date totals.

Each line is rounded once, to the currency's minor unit (half up); an invoice
total is the sum of its rounded lines, so lines and totals always reconcile.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit


@dataclass(frozen=True)
class SummaryLine:
    tenant: str
    subscription: str
    plan: str
    meter: str
    currency: str
    quantity: int
    rated: Decimal  # exact, nano-units
    amount: Decimal  # rounded to the currency's minor unit


@dataclass(frozen=True)
class InvoiceSummary:
    period: date
    lines: tuple[SummaryLine, ...]

    def subscription_totals(self) -> dict[tuple[str, str], tuple[str, str, Decimal]]:
        """(tenant, subscription) -> (plan, currency, invoice total)."""
        totals: dict[tuple[str, str], tuple[str, str, Decimal]] = {}
        for line in self.lines:
            key = (line.tenant, line.subscription)
            _, _, so_far = totals.get(key, (line.plan, line.currency, Decimal(0)))
            totals[key] = (line.plan, line.currency, so_far + line.amount)
        return totals

    def plan_totals(self) -> list[tuple[str, str, int, Decimal]]:
        """(plan, currency, subscriptions, amount) per plan, largest first."""
        subs: dict[tuple[str, str], set[str]] = defaultdict(set)
        amounts: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for line in self.lines:
            subs[(line.plan, line.currency)].add(line.subscription)
            amounts[(line.plan, line.currency)] += line.amount
        rows = [(plan, cur, len(subs[(plan, cur)]), amounts[(plan, cur)]) for plan, cur in subs]
        return sorted(rows, key=lambda row: (-row[3], row[0]))

    def currency_totals(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            totals[line.currency] += line.amount
        return dict(sorted(totals.items()))


def summarize(period: date, rows: Iterable[Mapping[str, Any]]) -> InvoiceSummary:
    lines = []
    for row in rows:
        rated = Decimal(row["amount"])
        currency = str(row["currency"])
        lines.append(
            SummaryLine(
                tenant=str(row["tenant"]),
                subscription=str(row["subscription"]),
                plan=str(row["plan"]),
                meter=str(row["meter"]),
                currency=currency,
                quantity=int(row["quantity"]),
                rated=rated,
                amount=round_to_minor_unit(rated, MINOR_UNIT_DIGITS[currency]),
            )
        )
    return InvoiceSummary(period, tuple(lines))


def write_csv(summary: InvoiceSummary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["period", "tenant", "subscription", "plan", "meter", "quantity",
                         "currency", "rated_amount", "amount"])  # fmt: skip
        for line in summary.lines:
            writer.writerow([summary.period.isoformat(), line.tenant, line.subscription,
                             line.plan, line.meter, line.quantity, line.currency,
                             line.rated, line.amount])  # fmt: skip
