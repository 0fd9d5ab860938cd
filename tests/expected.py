"""What the pipeline should have billed, computed independently in plain Decimal: the
distinct events summed per rated total, each total priced by the rating oracle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal

from meterline.events import UsageEvent
from rating import oracle
from rating.plans import PriceBook

TotalKey = tuple[str, str, date, int]  # subscription, meter, period start, plan version


def expected_totals(
    book: PriceBook, plan_of: Mapping[str, str], distinct: Iterable[UsageEvent]
) -> dict[TotalKey, tuple[int, Decimal]]:
    """(subscription, meter, period, plan version) -> (quantity, exact amount)."""
    quantity: dict[TotalKey, int] = defaultdict(int)
    for event in distinct:
        plan = book.plan_at(plan_of[event.subscription], event.timestamp.date())
        assert plan is not None
        period = date(event.timestamp.year, event.timestamp.month, 1)
        quantity[(event.subscription, event.meter, period, plan.version)] += event.quantity
    totals = {}
    for (subscription, meter, period, version), total in quantity.items():
        charge = book.plan(plan_of[subscription], version).charge_for(meter)
        assert charge is not None
        amount = oracle.rate_charge(charge, total, book.meter(meter).scale).amount
        totals[(subscription, meter, period, version)] = (total, amount)
    return totals
