"""One batch of Kafka records in, the rows to make durable out: a pure step, no I/O.

Validation, dedupe, aggregation and rating happen here; the worker only moves
records in and rows out, so every decision can be tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import msgspec
import numpy as np

from aggregation.state import TotalKey, UsageState, Verdict, dedupe_key, total_key
from meterline.events import UsageEvent, decode
from rating.plans import Plan, PriceBook
from rating.rater import rate
from rating.table import ChargeTable

Record = tuple[int, int, bytes]  # partition, offset, payload


@dataclass(frozen=True, slots=True)
class Rejection:
    partition: int
    offset: int
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    partition: int
    offset: int
    event: UsageEvent
    dedupe_key: bytes


@dataclass(frozen=True, slots=True)
class RatedTotal:
    tenant: str
    subscription: str
    meter: str
    period_start: date
    plan: str
    plan_version: int
    currency: str
    quantity: int
    amount_nanos: int
    partition: int
    offset: int


@dataclass
class BatchResult:
    accepted: list[AcceptedEvent] = field(default_factory=list)
    rated: list[RatedTotal] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    duplicates: int = 0


class BatchProcessor:
    def __init__(
        self,
        state: UsageState,
        plan_of: Mapping[tuple[str, str], str],
        book: PriceBook,
        charges: ChargeTable,
    ) -> None:
        self.state = state
        self.plan_of = plan_of
        self.book = book
        self.charges = charges
        self._in_force: dict[tuple[str, date], Plan | None] = {}

    def _plan_in_force(self, plan_id: str, day: date) -> Plan | None:
        key = (plan_id, day)
        if key not in self._in_force:
            self._in_force[key] = self.book.plan_at(plan_id, day)
        return self._in_force[key]

    def _validate(self, record: Record) -> tuple[UsageEvent, Plan] | Rejection:
        partition, offset, payload = record
        try:
            event = decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            return Rejection(partition, offset, "malformed", str(error), payload)
        plan_id = self.plan_of.get((event.tenant, event.subscription))
        if plan_id is None:
            detail = f"no subscription {event.subscription!r} for tenant {event.tenant!r}"
            return Rejection(partition, offset, "unknown_subscription", detail, payload)
        day = event.timestamp.date()
        plan = self._plan_in_force(plan_id, day)
        if plan is None:
            detail = f"plan {plan_id!r} has no version in force on {day}"
            return Rejection(partition, offset, "plan_not_in_force", detail, payload)
        if self.charges.charge_of(plan.id, plan.version, event.meter) is None:
            detail = f"meter {event.meter!r} is not priced by {plan.label}"
            return Rejection(partition, offset, "unpriced_meter", detail, payload)
        if event.quantity < 0:
            detail = f"quantity {event.quantity} is negative"
            return Rejection(partition, offset, "negative_quantity", detail, payload)
        return event, plan

    def process(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        changed: dict[TotalKey, Plan] = {}
        for record in records:
            checked = self._validate(record)
            if isinstance(checked, Rejection):
                result.rejected.append(checked)
                continue
            event, plan = checked
            partition, offset, _ = record
            key = dedupe_key(event)
            totals_key = total_key(event, plan.version)
            verdict = self.state.apply(partition, offset, event, key, totals_key)
            if verdict is Verdict.DUPLICATE:
                result.duplicates += 1
                continue
            result.accepted.append(AcceptedEvent(partition, offset, event, key))
            if verdict is Verdict.APPLIED:
                changed[totals_key] = plan
        result.rated = self._rate(sorted(changed.items()))
        return result

    def _rate(self, changed: list[tuple[TotalKey, Plan]]) -> list[RatedTotal]:
        if not changed:
            return []
        keys = [key for key, _ in changed]
        plans = [plan for _, plan in changed]
        charge_index = np.fromiter(
            (self.charges.index[(plan.id, plan.version, key[2])] for key, plan in changed),
            dtype=np.int64,
            count=len(keys),
        )
        totals = [self.state.totals[key] for key in keys]
        quantity = np.fromiter((t.quantity for t in totals), dtype=np.int64, count=len(keys))
        amounts = rate(self.charges, charge_index, quantity)
        return [
            RatedTotal(
                tenant=key[0],
                subscription=key[1],
                meter=key[2],
                period_start=key[3],
                plan=plan.id,
                plan_version=plan.version,
                currency=plan.currency,
                quantity=total.quantity,
                amount_nanos=int(amount),
                partition=total.partition,
                offset=total.offset,
            )
            for key, plan, total, amount in zip(keys, plans, totals, amounts, strict=True)
        ]
