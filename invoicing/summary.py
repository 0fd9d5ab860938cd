"""The per-subscription invoice summary of a period: a usage line per rated
period-to-date total, then, per slice of the period under one plan version, the plan's
fixed fees prorated by day and the minimum-commitment true-up.

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

from meterline.events import group_label
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import round_to_minor_unit
from rating.period import Period, commitment_true_up, fixed_fee_lines, slices
from rating.plans import Plan, PriceBook

USAGE, FIXED_FEE, TRUE_UP = "usage", "fixed fee", "commitment true-up"


@dataclass(frozen=True)
class SummaryLine:
    tenant: str
    subscription: str
    plan: str
    plan_version: int
    kind: str  # USAGE, FIXED_FEE or TRUE_UP
    item: str  # the meter, the fee, or the commitment
    group: str  # for usage of a grouped meter, e.g. "model=large"; otherwise ""
    currency: str
    quantity: int  # usage only
    rated: Decimal  # exact: nano-units for usage, the minor unit otherwise
    amount: Decimal  # rounded to the currency's minor unit


@dataclass(frozen=True)
class Subscriber:
    tenant: str
    subscription: str
    plan: str
    active_from: date


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


def summarize(
    period: date,
    rows: Iterable[Mapping[str, Any]],
    book: PriceBook,
    subscribers: Iterable[Subscriber],
) -> InvoiceSummary:
    """``rows`` are the period's rated totals; ``subscribers`` every subscription, with or
    without usage, since fixed fees and commitments are owed either way."""
    usage: dict[tuple[str, str], list[SummaryLine]] = defaultdict(list)
    for row in rows:
        rated = Decimal(row["amount"])
        currency = str(row["currency"])
        line = SummaryLine(
            tenant=str(row["tenant"]),
            subscription=str(row["subscription"]),
            plan=str(row["plan"]),
            plan_version=int(row["plan_version"]),
            kind=USAGE,
            item=str(row["meter"]),
            group=group_label(str(row["group_key"])),
            currency=currency,
            quantity=int(row["quantity"]),
            rated=rated,
            amount=round_to_minor_unit(rated, MINOR_UNIT_DIGITS[currency]),
        )
        usage[(line.tenant, line.subscription)].append(line)
    billing = Period(period)
    lines: list[SummaryLine] = []
    for sub in sorted(subscribers, key=lambda s: (s.tenant, s.subscription)):
        own_usage = usage.pop((sub.tenant, sub.subscription), [])
        lines.extend(own_usage)
        for part in slices(book, sub.plan, billing, sub.active_from):
            fees = [
                _charge_line(sub, part.plan, FIXED_FEE, fee.description, fee.amount)
                for fee in fixed_fee_lines(part, billing)
            ]
            billed = [line.amount for line in own_usage if line.plan_version == part.plan.version]
            shortfall = commitment_true_up(part, billing, billed + [fee.amount for fee in fees])
            lines.extend(fees)
            if shortfall:
                lines.append(_charge_line(sub, part.plan, TRUE_UP, "minimum commitment", shortfall))
    for orphaned in usage.values():  # usage of a subscription no longer registered: still billed
        lines.extend(orphaned)
    return InvoiceSummary(period, tuple(lines))


def _charge_line(sub: Subscriber, plan: Plan, kind: str, item: str, amount: Decimal) -> SummaryLine:
    return SummaryLine(
        tenant=sub.tenant, subscription=sub.subscription, plan=plan.id,
        plan_version=plan.version, kind=kind, item=item, group="", currency=plan.currency,
        quantity=0, rated=amount, amount=amount,
    )  # fmt: skip


def write_csv(summary: InvoiceSummary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["period", "tenant", "subscription", "plan", "plan_version", "kind",
                         "item", "group", "quantity", "currency", "rated_amount",
                         "amount"])  # fmt: skip
        for line in summary.lines:
            writer.writerow([summary.period.isoformat(), line.tenant, line.subscription,
                             line.plan, line.plan_version, line.kind, line.item, line.group,
                             line.quantity, line.currency, line.rated, line.amount])  # fmt: skip
