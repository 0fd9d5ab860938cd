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
from rating.plans import PriceBook
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
        self.charges = charges
        self.currency_of = {plan.id: plan.currency for plan in book.plans}

    def _validate(self, record: Record) -> UsageEvent | Rejection:
        partition, offset, payload = record
        try:
            event = decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            return Rejection(partition, offset, "malformed", str(error), payload)
        plan = self.plan_of.get((event.tenant, event.subscription))
        if plan is None:
            detail = f"no subscription {event.subscription!r} for tenant {event.tenant!r}"
            return Rejection(partition, offset, "unknown_subscription", detail, payload)
        if self.charges.charge_of(plan, event.meter) is None:
            detail = f"meter {event.meter!r} is not priced by plan {plan!r}"
            return Rejection(partition, offset, "unpriced_meter", detail, payload)
        if event.quantity < 0:
            detail = f"quantity {event.quantity} is negative"
            return Rejection(partition, offset, "negative_quantity", detail, payload)
        return event

    def process(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        changed: set[TotalKey] = set()
        for record in records:
            checked = self._validate(record)
            if isinstance(checked, Rejection):
                result.rejected.append(checked)
                continue
            partition, offset, _ = record
            key = dedupe_key(checked)
            verdict = self.state.apply(partition, offset, checked, key)
            if verdict is Verdict.DUPLICATE:
                result.duplicates += 1
                continue
            result.accepted.append(AcceptedEvent(partition, offset, checked, key))
            if verdict is Verdict.APPLIED:
                changed.add(total_key(checked))
        result.rated = self._rate(sorted(changed))
        return result

    def _rate(self, keys: list[TotalKey]) -> list[RatedTotal]:
        if not keys:
            return []
        plans = [self.plan_of[(tenant, subscription)] for tenant, subscription, _, _ in keys]
        charge_index = np.fromiter(
            (self.charges.index[(plan, key[2])] for plan, key in zip(plans, keys, strict=True)),
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
                plan=plan,
                currency=self.currency_of[plan],
                quantity=total.quantity,
                amount_nanos=int(amount),
                partition=total.partition,
                offset=total.offset,
            )
            for key, plan, total, amount in zip(keys, plans, totals, amounts, strict=True)
        ]
