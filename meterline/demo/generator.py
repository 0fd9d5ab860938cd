"""Deterministic demo data: subscriptions on the demo plans and a month of usage with duplicates.

Traffic is skewed (a few subscriptions send most events), as real usage is.
Duplicates re-send an earlier event with the same id, as a retrying producer would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from base.events import UsageEvent
from rating.period import Period
from subscriptions.model import Customer, Subscription

TENANT = "demo"
_QUANTITY_RANGE = {
    "api_calls": (1, 40), "tokens": (50, 20_000), "seats": (1, 60), "active_users": (1, 1),
    "payments": (100, 50_000),  # 1.00 to 500.00
    "llm_cost": (1_000, 5_000_000),  # 0.001 to 5.00
    "cores": (1, 64), "replicas": (1, 12),
}  # fmt: skip
_METER_SHARE = {
    "api_calls": 0.44,
    "tokens": 0.40,
    "seats": 0.03,  # a gauge, read now and then
    "active_users": 0.05,  # a sign-in: each user counts once per period
    "payments": 0.04,
    "llm_cost": 0.02,
    "cores": 0.01,
    "replicas": 0.01,
}
_GAUGE_SHARE = 0.02  # of new events: a report of the disk in use (``disk_report``)
_MODELS = ("small", "large")  # the demo's tokens meter groups by model
_USERS = 40  # per subscription, at most


def subscriptions(count: int, plans: Sequence[str], seed: int, period: date) -> (
    list[Subscription]
):  # fmt: skip
    """Subscriptions of the demo's tenant, active from the start of ``period``; one in ten
    starts inside it instead, so its fixed fees are prorated."""
    rng = random.Random(seed)
    start, _ = usage_span(period)
    made = []
    for n in range(count):
        plan = rng.choice(plans)
        late = rng.randint(1, 27) if rng.random() < 0.1 else 0  # days into the period
        made.append(Subscription(TENANT, f"sub-{n:06d}", f"cust-{n:06d}", plan,
                                 start + timedelta(days=late), version=1))  # fmt: skip
    return made


def subscription(tenant: str, name: str, customer: str, plan: str, period: date) -> (
    Subscription
):  # fmt: skip
    """One subscription, active from the start of ``period``, as the demo stores them."""
    return Subscription(tenant, name, customer, plan, usage_span(period)[0], version=1)


TAX_RATES = (Decimal(0), Decimal("8.25"), Decimal(20))


def customers(subs: Sequence[Subscription]) -> list[Customer]:
    """A customer per subscription, with a name, a CRM id and one of a few tax rates."""
    return [
        Customer(s.tenant, s.customer, f"Customer {s.customer.removeprefix('cust-')}",
                 f"crm-{s.customer.removeprefix('cust-')}", TAX_RATES[number % len(TAX_RATES)])
        for number, s in enumerate(subs)
    ]  # fmt: skip


def usage_span(period: date) -> tuple[datetime, datetime]:
    """[start, end) of a period's usage: the whole month, or up to now if it has not ended."""
    billing = Period(period)
    start = datetime.combine(billing.start, time(), tzinfo=UTC)
    end = datetime.combine(billing.end, time(), tzinfo=UTC)
    return start, min(end, datetime.now(UTC))


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A millisecond in [start, end), or ``start`` when the span is empty."""
    span_ms = max(0, int((end - start).total_seconds() * 1000) - 1)
    return start + timedelta(milliseconds=rng.randint(0, span_ms))


def events(
    subs: Sequence[Subscription],
    count: int,
    period: date,
    duplicate_share: float,
    seed: int,
) -> Iterator[UsageEvent]:
    """``count`` events in all, of which about ``duplicate_share`` are re-sends. Usage is
    spread over the period, up to now if the period has not ended."""
    rng = random.Random(seed + 1)
    weights = [1.0 / (rank + 1) for rank in range(len(subs))]  # Zipf-like skew
    start, end = usage_span(period)
    sent: list[UsageEvent] = []
    chosen = rng.choices(subs, weights=weights, k=count)
    for number, sub in enumerate(chosen):
        if sent and rng.random() < duplicate_share:
            event = rng.choice(sent)
        else:
            active_from = min(max(start, sub.started_at), end)
            event_id = f"evt-{seed}-{number:09d}"
            if rng.random() < _GAUGE_SHARE:
                # A gauge reports in time order: its moment runs with the event's number.
                elapsed = (end - active_from) * number / count
                moment = active_from + elapsed - elapsed % timedelta(milliseconds=1)
                event = disk_report(rng, sub, event_id, moment)
            else:
                event = usage_event(rng, sub, event_id, _moment(rng, active_from, end))
            sent.append(event)
        yield event


def disk_report(
    rng: random.Random, sub: Subscription, event_id: str, moment: datetime
) -> UsageEvent:
    """A report of the disk a subscription uses now (GB, at the meter's 3 decimals), which
    the demo bills by the GB-hour."""
    return UsageEvent(
        id=event_id, tenant=sub.tenant, subscription=sub.subscription, meter="disk_gb",
        quantity=rng.randint(1_000, 500_000), timestamp=moment, source="demo-service",
    )  # fmt: skip


def usage_event(
    rng: random.Random, sub: Subscription, event_id: str, moment: datetime
) -> UsageEvent:
    """One event of the demo's mix: a meter by its share, a quantity in its range, and the
    properties it is grouped or counted by."""
    meter = rng.choices(tuple(_METER_SHARE), weights=tuple(_METER_SHARE.values()))[0]
    low, high = _QUANTITY_RANGE[meter]
    return UsageEvent(
        id=event_id, tenant=sub.tenant, subscription=sub.subscription, meter=meter,
        quantity=rng.randint(low, high), timestamp=moment, source="demo-service",
        properties=_properties(rng, meter),
    )  # fmt: skip


def _properties(rng: random.Random, meter: str) -> dict[str, str | int | bool]:
    if meter == "tokens":
        return {"model": rng.choice(_MODELS)}
    if meter == "active_users":
        return {"user": f"user-{rng.randint(1, _USERS)}"}
    return {}


def bad_events(
    subs: Sequence[Subscription], count: int, period: date, seed: int
) -> list[UsageEvent]:
    """Events no one can bill, in turn: an unknown subscription, a negative quantity, a
    meter no plan prices. Each must reach the dead-letter topic, not an invoice."""
    rng = random.Random(seed + 2)
    start, end = usage_span(period)
    return [
        spoiled_event(rng.choice(subs), number, seed, _moment(rng, start, end))
        for number in range(count)
    ]


def spoiled_event(sub: Subscription, number: int, seed: int, moment: datetime) -> UsageEvent:
    """In turn: an unknown subscription, a negative quantity, a meter no plan prices."""
    subscription, meter, quantity = (
        ("sub-unknown", "api_calls", 5),
        (sub.subscription, "api_calls", -5),
        (sub.subscription, "gpu_hours", 5),
    )[number % 3]
    return UsageEvent(
        id=f"bad-{seed}-{number:06d}", tenant=sub.tenant, subscription=subscription,
        meter=meter, quantity=quantity, source="demo-service", timestamp=moment,
    )  # fmt: skip


def interleave(
    events: Sequence[UsageEvent], others: Sequence[UsageEvent], seed: int
) -> list[UsageEvent]:
    """``events`` in their order, with ``others`` dropped in at random places."""
    rng = random.Random(seed + 3)
    mixed = list(events)
    for other in others:
        mixed.insert(rng.randint(0, len(mixed)), other)
    return mixed


def distinct(sent: Sequence[UsageEvent]) -> list[UsageEvent]:
    """What should be billed: the first of each (tenant, source, id, meter)."""
    seen: set[tuple[str, str, str, str]] = set()
    kept = []
    for event in sent:
        identity = (event.tenant, event.source, event.id, event.meter)
        if identity not in seen:
            seen.add(identity)
            kept.append(event)
    return kept
