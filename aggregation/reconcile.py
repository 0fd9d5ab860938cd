"""Reconciliation: every acknowledged event is billed once, dropped as a duplicate, or
dead-lettered with its reason, and the store proves it.

An event is acknowledged once Kafka holds it (the gateway answers 202 only then). The
worker writes a row for every event it takes from the log, in exactly one of four
tables (billed: ``events``; duplicates: ``duplicate_events``; refused:
``rejected_events``; sent on to its subscription's partition, where it is taken from
the log again: ``forwarded_events``), and each row carries how many events its record
held. So for
every record the store can check that its events are all accounted for, and for every
partition's log that no record between the first and the last one it saw is missing.
What the worker has not reached yet is still in flight: the log holds it, the store
does not yet. Per tenant and usage month:

    acknowledged = billed + duplicates + dead-lettered + in flight

fails exactly when a record lost an event (``missing`` names it, and its subscription)
or a whole record left no row (``unaccounted_records``: a record has no tenant until it
is read, so those are counted for the whole store). Corrections of closed periods come on
top: billable = billed - retracted + backfilled, each correction in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from aggregation.readers import PipelineReads


@dataclass
class TenantMonth:
    tenant: str
    month: date
    billed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    missing: int = 0  # events records held that no row accounts for
    # Sent on to their subscription's partition, where each is counted again as billed,
    # duplicate or dead-lettered: not part of ``acknowledged``, which counts each once.
    forwarded: int = 0
    # Corrections of closed periods (``aggregation.corrections``): events added outside the
    # log, and billed events taken back. Billable = billed - retracted + backfilled.
    backfilled: int = 0
    retracted: int = 0

    @property
    def billable(self) -> int:
        return self.billed - self.retracted + self.backfilled

    @property
    def acknowledged(self) -> int:
        return self.billed + self.duplicates + self.dead_lettered + self.missing


@dataclass(frozen=True)
class Incomplete:
    """A record with fewer accounted events than it held."""

    partition: int
    epoch: int
    offset: int
    held: int
    accounted: int
    tenant: str
    subscription: str

    def describe(self) -> str:
        return (f"{self.tenant}/{self.subscription}: the record at partition {self.partition}, "
                f"offset {self.offset} (log epoch {self.epoch}) held {self.held} events and "
                f"{self.accounted} are accounted for")  # fmt: skip


@dataclass
class Reconciliation:
    months: list[TenantMonth] = field(default_factory=list)
    incomplete: list[Incomplete] = field(default_factory=list)
    unaccounted_records: int = 0  # offsets inside a log with no accounted event

    @property
    def holds(self) -> bool:
        return not self.incomplete and self.unaccounted_records == 0

    def first_failure(self) -> str | None:
        if self.incomplete:
            return self.incomplete[0].describe()
        if self.unaccounted_records:
            return (f"{self.unaccounted_records} records in the log left no row at all (a "
                    "record lost whole, or an offset taken by a transactional producer's "
                    "marker)")  # fmt: skip
        return None


def reconcile(
    store: PipelineReads,
    tenant: str | None = None,
    month: date | None = None,
    since: datetime | None = None,
) -> Reconciliation:
    """The identity for one tenant and usage month (all of them by default)."""
    months: dict[tuple[str, date], TenantMonth] = {}
    for who, when, kind, count in store.accounted_by_kind(tenant, month):
        entry = months.setdefault((who, when), TenantMonth(who, when))
        setattr(entry, {"billed": "billed", "duplicate": "duplicates",
                        "dead_lettered": "dead_lettered", "forwarded": "forwarded"}[kind],
                count)  # fmt: skip
    for who, when, added, taken in store.corrected_by_month(tenant, month):
        entry = months.setdefault((who, when), TenantMonth(who, when))
        entry.backfilled, entry.retracted = added, taken
    incomplete = [Incomplete(*row) for row in store.incomplete_records(tenant, month, since)]
    for record in incomplete:
        owner = months.get((record.tenant, _month_of(record, months)))
        if owner is not None:
            owner.missing += max(0, record.held - record.accounted)
    gaps = _records_without_a_row(store, since)
    ordered = sorted(months.values(), key=lambda m: (m.tenant, m.month))
    return Reconciliation(ordered, incomplete, gaps)


def _month_of(record: Incomplete, months: dict[tuple[str, date], TenantMonth]) -> date:
    """The usage month to count a record's missing events in: its tenant's latest, since the
    missing events' own timestamps are what is missing."""
    return max((when for who, when in months if who == record.tenant), default=date.min)


def unaccounted_events(store: PipelineReads, since: datetime) -> int:
    """The identity's shortfall over what was written since ``since``: events missing from
    their records, plus records that left no row (0 when the identity holds)."""
    missing = sum(max(0, record[3] - record[4])
                  for record in store.incomplete_records(since=since, limit=10_000))  # fmt: skip
    return missing + _records_without_a_row(store, since)


def _records_without_a_row(store: PipelineReads, since: datetime | None) -> int:
    """Offsets inside each partition's log (first to last seen) that no row accounts for."""
    return sum(last - first + 1 - seen for _, _, first, last, seen in store.record_spans(since))
