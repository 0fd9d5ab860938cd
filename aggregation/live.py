"""Each subscription's period-to-date usage as the worker holds it, indexed by subscription
so that an entitlement or an alert reads one subscription's totals without a query: the
quantity each total prices and its amount, as of the last batch made durable.

Plain data, no I/O: the aggregator takes in each durable batch's rated rows, and the rows
the store holds of a partition when the worker takes it on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import date
from typing import NamedTuple

import msgspec

from aggregation.model import RatedRows, TotalKey

Owner = tuple[str, str]  # tenant, subscription
SEVERAL = ""  # a subscription whose batch changed more than one meter (no meter id is "")
# How totals of one meter combine across the parts a period is split into (plan changes,
# versions, groups): quantities that add up add; a gauge's parts are not added.
_HIGHEST = frozenset({"max", "latest", "avg"})


class Held(msgspec.Struct, frozen=True, gc=False):
    """One total as held: a struct the collector does not track, nor the dict holding it
    (a worker holds one per total, a million subscriptions' worth: tracked, every full
    collection walked them all, and an entitlement asked then waited)."""

    quantity: int  # what the total's charge prices, in the meter's scale
    amount_nanos: int
    currency: str
    partition: int


class MeterUsage(NamedTuple):
    quantity: int  # in the meter's scale
    amounts: dict[str, int]  # currency -> nano-units


class LiveUsage:
    def __init__(self) -> None:
        self._held: dict[Owner, dict[TotalKey, Held]] = {}
        self.updated = time.time()  # when the last batch was taken in (unix seconds)

    def __len__(self) -> int:
        return len(self._held)

    def absorb(self, rows: RatedRows) -> dict[Owner, str]:
        """Take a durable batch's rated totals; return the subscriptions they changed, each
        with the meter it changed, or ``SEVERAL`` (a string each, not a set: a batch
        changes tens of thousands, and a set apiece cost more than the rest of it)."""
        held = self._held
        changed: dict[Owner, str] = {}
        for key, quantity, amount, currency, partition in zip(
            rows.keys, rows.quantities, rows.amounts_nanos, rows.currencies, rows.partitions,
            strict=True,
        ):  # fmt: skip
            owner = (key.tenant, key.subscription)
            totals = held.get(owner)
            if totals is None:
                totals = held[owner] = {}
            totals[key] = Held(quantity, amount, currency, partition)
            meter = changed.get(owner)
            if meter is None:
                changed[owner] = key.meter
            elif meter != key.meter:
                changed[owner] = SEVERAL
        self.updated = time.time()
        return changed

    def totals(self, owner: Owner, period: date) -> Iterator[tuple[TotalKey, Held]]:
        """The subscription's totals of the period labelled ``period``."""
        for key, held in self._held.get(owner, {}).items():
            if key.period_start == period:
                yield key, held

    def meter(self, owner: Owner, period: date, meter: str, aggregation: str) -> MeterUsage:
        """One meter's usage of the period, its parts combined."""
        return combined(
            ((k, h) for k, h in self.totals(owner, period) if k.meter == meter), aggregation
        )

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop what another worker now counts (the store is read again if it comes back)."""
        for owner in list(self._held):
            kept = {k: h for k, h in self._held[owner].items() if h.partition not in partitions}
            if kept:
                self._held[owner] = kept
            else:
                del self._held[owner]

    def forget_before(self, period: date) -> None:
        """Drop totals of periods labelled before ``period``, which nobody asks about."""
        for owner in list(self._held):
            kept = {k: h for k, h in self._held[owner].items() if k.period_start >= period}
            if kept:
                self._held[owner] = kept
            else:
                del self._held[owner]


def combined(parts: Iterable[tuple[TotalKey, Held]], aggregation: str) -> MeterUsage:
    quantity: int | None = None
    amounts: dict[str, int] = {}
    for _, held in parts:
        if quantity is None:
            quantity = held.quantity
        elif aggregation == "min":
            quantity = min(quantity, held.quantity)
        elif aggregation in _HIGHEST:
            quantity = max(quantity, held.quantity)
        else:
            quantity += held.quantity
        amounts[held.currency] = amounts.get(held.currency, 0) + held.amount_nanos
    return MeterUsage(quantity or 0, amounts)
