"""What the pipeline should have billed, computed independently in plain Decimal: the
distinct events summed per rated total, each total priced by the rating oracle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date
from decimal import ROUND_HALF_UP, Decimal

from aggregation.reconcile import Reconciliation
from base.events import UsageEvent, group_key
from rating import oracle
from rating.period import Period
from rating.plans import Meter, Percentage, PriceBook

# subscription, meter, period start, plan version, group
TotalKey = tuple[str, str, date, int, str]


def expected_totals(
    book: PriceBook, plan_of: Mapping[str, str], distinct: Iterable[UsageEvent]
) -> dict[TotalKey, tuple[int, Decimal]]:
    """(subscription, meter, period, plan version, group) -> (quantity, exact amount), each
    meter's events combined as it declares (sum, count, max, min, mean or latest), in send
    order; a percentage charge's amount from its transactions' fees, in send order."""
    events: dict[TotalKey, list[UsageEvent]] = defaultdict(list)
    for event in distinct:
        plan = book.plan_at(plan_of[event.subscription], event.timestamp.astimezone(UTC).date())
        assert plan is not None
        period = Period.of(event.timestamp.astimezone(UTC).date()).start
        group = group_key(event.properties, book.meter(event.meter).group_by)
        events[(event.subscription, event.meter, period, plan.version, group)].append(event)
    quantity = {key: _combined(book.meter(key[1]), seen) for key, seen in events.items()}
    totals = {}
    for (subscription, meter, period, version, group), total in quantity.items():
        charge = book.plan(plan_of[subscription], version).charge_for(meter)
        assert charge is not None
        scale = book.meter(meter).scale
        if isinstance(charge, Percentage):  # each transaction's fee, in the order counted
            seen = events[(subscription, meter, period, version, group)]
            fees = oracle.transaction_fees(charge, [event.quantity for event in seen], scale)
            amount = oracle.accrued_amount(charge, fees)
        else:
            amount = oracle.rate_charge(charge, total, scale).amount
        totals[(subscription, meter, period, version, group)] = (total, amount)
    return totals


def _combined(meter: Meter, events: list[UsageEvent]) -> int:
    aggregation = meter.aggregation
    if aggregation == "unique_count":
        assert meter.unique is not None
        return len({repr(event.properties[meter.unique]) for event in events})
    if aggregation == "count":
        return len(events)
    if aggregation == "max":
        return max(event.quantity for event in events)
    if aggregation == "min":
        return min(event.quantity for event in events)
    if aggregation == "avg":
        mean = Decimal(sum(event.quantity for event in events)) / len(events)
        return int(mean.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if aggregation == "latest":  # the latest timestamp; on a tie, the one sent later
        latest = max(enumerate(events), key=lambda item: (item[1].timestamp, item[0]))
        return latest[1].quantity
    return sum(event.quantity for event in events)


def print_reconciliation(found: Reconciliation) -> None:
    """What `meterline reconcile` would print, for the log of a fault test."""
    for m in found.months:
        print(
            f"  reconcile {m.tenant} {m.month:%Y-%m}: acknowledged {m.acknowledged:,} = billed "
            f"{m.billed:,} + duplicates {m.duplicates:,} + dead-lettered {m.dead_lettered:,}"
            f" (+ missing {m.missing:,}); records with no row: {found.unaccounted_records}"
        )
