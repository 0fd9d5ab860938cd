"""One batch of Kafka records in, the rows to make durable out: a pure step, no I/O.

Validation, dedupe, aggregation and rating happen here; the worker only moves
records in and rows out, so every decision can be tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from aggregation.state import Position, TotalKey, UsageState, Verdict, dedupe_key, total_key
from meterline.events import Undecodable, UsageEvent, decode_record, encode
from rating.plans import Plan, PriceBook
from rating.rater import rate
from rating.table import ChargeTable

Record = tuple[int, int, bytes | None, bytes]  # partition, offset, key, payload


@dataclass(frozen=True, slots=True)
class Rejection:
    partition: int
    offset: int
    index: int  # the event's place in its record
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    partition: int
    offset: int
    index: int
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
    index: int


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

    def _validate(self, event: UsageEvent, key: bytes | None) -> Plan | tuple[str, str]:
        """The plan version that prices the event, or (reason, detail) for rejecting it."""
        if key is not None and key != event.partition_key():
            return "wrong_partition_key", (
                f"the record's key {key!r} is not this event's tenant/subscription; "
                "one subscription's events must share a partition"
            )
        plan_id = self.plan_of.get((event.tenant, event.subscription))
        if plan_id is None:
            detail = f"no subscription {event.subscription!r} for tenant {event.tenant!r}"
            return "unknown_subscription", detail
        day = event.timestamp.date()
        plan = self._plan_in_force(plan_id, day)
        if plan is None:
            return "plan_not_in_force", f"plan {plan_id!r} has no version in force on {day}"
        if self.charges.charge_of(plan.id, plan.version, event.meter) is None:
            return "unpriced_meter", f"meter {event.meter!r} is not priced by {plan.label}"
        if event.quantity < 0:
            return "negative_quantity", f"quantity {event.quantity} is negative"
        return plan

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Whole records only: a record is never split across two batches."""
        result = BatchResult()
        changed: dict[TotalKey, Plan] = {}
        for partition, offset, record_key, payload in records:
            for index, item in enumerate(decode_record(payload)):
                if isinstance(item, Undecodable):
                    rejection = Rejection(
                        partition, offset, index, "malformed", item.detail, item.payload
                    )
                    result.rejected.append(rejection)
                    continue
                plan = self._validate(item, record_key)
                if not isinstance(plan, Plan):
                    reason, detail = plan
                    rejection = Rejection(partition, offset, index, reason, detail, encode(item))
                    result.rejected.append(rejection)
                    continue
                position: Position = (partition, offset, index)
                mark = dedupe_key(item)
                totals_key = total_key(item, plan.version)
                verdict = self.state.apply(position, mark, totals_key, item.quantity)
                if verdict is Verdict.DUPLICATE:
                    result.duplicates += 1
                    continue
                result.accepted.append(AcceptedEvent(partition, offset, index, item, mark))
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
                index=total.index,
            )
            for key, plan, total, amount in zip(keys, plans, totals, amounts, strict=True)
        ]
