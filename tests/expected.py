"""What the pipeline should have billed, computed independently in plain Decimal: the
distinct events summed per rated total, each total priced by the rating oracle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
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
        events[_key(book, plan_of, event)].append(event)
    quantity = {key: _combined(book.meter(key[1]), seen, _slice_end(book, plan_of, key))
                for key, seen in events.items()}  # fmt: skip
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


def refused_out_of_order(
    book: PriceBook, plan_of: Mapping[str, str], sent: Iterable[UsageEvent]
) -> tuple[int, set[tuple[str, str, str, str]]]:
    """(how many sends a weighted sum refuses, being older than a report its total
    counted already; the identities of the events never billed for it), in send order:
    a re-send of such an event is judged, and refused, again."""
    counted: set[tuple[str, str, str, str]] = set()
    latest: dict[TotalKey, datetime] = {}
    refused, never = 0, set()
    for event in sent:
        identity = (event.tenant, event.source, event.id, event.meter)
        if identity in counted:
            continue
        if book.meter(event.meter).aggregation == "weighted_sum":
            key = _key(book, plan_of, event)
            if key in latest and event.timestamp < latest[key]:
                refused += 1
                never.add(identity)
                continue
            latest[key] = event.timestamp
        counted.add(identity)
        never.discard(identity)
    return refused, never


def _key(book: PriceBook, plan_of: Mapping[str, str], event: UsageEvent) -> TotalKey:
    plan = book.plan_at(plan_of[event.subscription], event.timestamp.astimezone(UTC).date())
    assert plan is not None
    period = Period.of(event.timestamp.astimezone(UTC).date()).start
    group = group_key(event.properties, book.meter(event.meter).group_by)
    return (event.subscription, event.meter, period, plan.version, group)


def _slice_end(book: PriceBook, plan_of: Mapping[str, str], key: TotalKey) -> datetime:
    """Where the total's part of its period ends: the period's end, or the first day of
    the plan's next version."""
    subscription, _, period, version, _ = key
    ends = Period.of(period).end
    for later in book.versions_of(plan_of[subscription]):
        if later.version > version and later.effective_from is not None:
            ends = min(ends, later.effective_from)
    return datetime(ends.year, ends.month, ends.day, tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _combined(meter: Meter, events: list[UsageEvent], until: datetime) -> int:
    aggregation = meter.aggregation
    if aggregation == "weighted_sum":  # in time order; a report out of it is refused
        points: list[tuple[datetime, int]] = []
        for event in events:
            if not points or event.timestamp >= points[-1][0]:
                points.append((event.timestamp, event.quantity))
        # Each moment to the millisecond, as events are stored and weighed.
        edges = [moment for moment, _ in points[1:]] + [until]
        held = sum(
            (Decimal(value) * (_ms(edge) - _ms(moment))
             for (moment, value), edge in zip(points, edges, strict=True)),
            Decimal(0),
        )  # fmt: skip
        per_ms = Decimal(meter.per_ms)
        return int((held / per_ms).quantize(Decimal(1), rounding=ROUND_HALF_UP))
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
