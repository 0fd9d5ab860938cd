"""The store of corrections to closed periods: the journal, events backfilled, events
retracted, and the totals rated again. See migration 0022 for the tables.

A correction is written in this order: its journal row as pending, with its whole plan;
the events it adds (each naming the correction) and the retractions; the totals rated
again; then, by invoicing, its credit notes and drafts; last, the journal row as
committed. Readers of usage count what a correction adds or takes away only once it is
committed (the ``billable_events`` view), and a pending correction is finished from its
plan by the next correction or invoicing command, so a crash leaves none or all of it.

Backfilled events are stored in the log epoch ``BACKFILL_EPOCH``, which no Kafka log
reaches: a worker never reads them back as the tail of a partition, and reconciliation
of the log leaves them out. A rewritten total keeps the position of the last logged event
it absorbed (the replay rule's marker) and takes a row version one above the stored one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime

import msgspec

from aggregation.log_identity import ordinal
from aggregation.model import RatedRows, TotalKey
from aggregation.state import dedupe_key
from base.clickhouse import TableStore, as_utc
from base.events import UsageEvent, decode_properties, properties_json

BACKFILL, RETRACT = "backfill", "retract"
PENDING, COMMITTED = "pending", "committed"
BACKFILL_EPOCH = 0xFFFF_FFFF  # above any log a partition will have (``log_identity``)


class Retracted(msgspec.Struct, frozen=True):
    """A stored event a retraction takes back."""

    subscription: str
    meter: str
    mark: str  # its dedupe key, hex
    event_id: str
    quantity: int
    timestamp: datetime


class Touched(msgspec.Struct, frozen=True, order=True):
    """A subscription's closed period whose totals of ``meters`` a correction rates again."""

    subscription: str
    period: date  # its label (``rating.period.Period``)
    since: datetime  # the period's first moment
    until: datetime  # and the first moment after it
    meters: tuple[str, ...]


class Plan(msgspec.Struct, frozen=True):
    """Everything a correction's commit needs, stored in its journal row before anything
    else: a commit cut short is finished from it."""

    correction: str
    tenant: str
    kind: str  # BACKFILL or RETRACT
    by: str
    reason: str
    added: tuple[UsageEvent, ...] = ()
    retracted: tuple[Retracted, ...] = ()
    touched: tuple[Touched, ...] = ()
    homes: dict[str, int] = {}  # each subscription's partition, for the rows it writes


class CorrectionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A correction asked over HTTP, as the gateway hands it to whoever holds the store:
    the events of a backfill checked already, or what a retraction selects."""

    tenant: str
    kind: str  # BACKFILL or RETRACT
    reason: str
    by: str
    commit: bool = False
    events: tuple[UsageEvent, ...] = ()
    ids: tuple[str, ...] = ()
    subscription: str | None = None
    meter: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class Journaled(msgspec.Struct, frozen=True):
    plan: Plan
    status: str
    created_at: datetime


class StoredTotal(msgspec.Struct, frozen=True):
    """A rated total's row as stored: its key, the position it carries and its version."""

    key: TotalKey
    partition: int
    offset: int  # an ordinal
    index: int
    version: int


_encode = msgspec.json.encode
_plan = msgspec.json.Decoder(Plan)
_COMMITTED = "(SELECT correction FROM {corrections} FINAL WHERE status = 'committed')"


class CorrectionStore(TableStore):
    def journal(self, tenant: str | None = None, status: str | None = None) -> list[Journaled]:
        """Corrections, oldest first."""
        rows = self._client.query(
            "SELECT plan, status, created_at FROM "
            f"{self._table('corrections')} FINAL WHERE (tenant = {{tenant:String}} OR "
            "{tenant:String} = '') AND (status = {status:String} OR {status:String} = '') "
            "ORDER BY created_at, correction",
            parameters={"tenant": tenant or "", "status": status or ""},
        ).result_rows
        return [Journaled(_plan.decode(plan), status, as_utc(at)) for plan, status, at in rows]

    def record(self, plan: Plan, status: str, at: datetime) -> None:
        """The journal row of ``plan`` in ``status`` (a commit's last write is COMMITTED)."""
        self._client.insert(
            self._table("corrections"),
            [[plan.tenant, plan.correction, plan.kind, status, plan.by, plan.reason,
              _encode(plan).decode(), at, 2 if status == COMMITTED else 1]],
            column_names=["tenant", "correction", "kind", "status", "requested_by", "reason",
                          "plan", "created_at", "version"],
        )  # fmt: skip

    def status_of(self, tenant: str, correction: str) -> str | None:
        found = self._client.query(
            f"SELECT status FROM {self._table('corrections')} FINAL "
            "WHERE tenant = {tenant:String} AND correction = {correction:String}",
            parameters={"tenant": tenant, "correction": correction},
        ).result_rows
        return str(found[0][0]) if found else None

    def billable(
        self, tenant: str, subscription: str, meters: Sequence[str], since: datetime,
        until: datetime,
    ) -> list[tuple[UsageEvent, bytes, int]]:  # fmt: skip
        """The billable events of a subscription's ``meters`` stamped in [since, until), in
        time order: (event, dedupe key, partition)."""
        rows = self._client.query(
            "SELECT event_id, meter, quantity, timestamp, source, properties, dedupe_key, "
            f"kafka_partition FROM {self._table('billable_events')} "
            "WHERE tenant = {tenant:String} AND subscription = {subscription:String} "
            "AND meter IN {meters:Array(String)} AND timestamp >= {since:DateTime64(3, 'UTC')} "
            "AND timestamp < {until:DateTime64(3, 'UTC')} "
            "ORDER BY timestamp, kafka_partition, log_epoch, kafka_offset, event_index",
            parameters={"tenant": tenant, "subscription": subscription, "meters": list(meters),
                        "since": since, "until": until},
            column_formats={"dedupe_key": "bytes"},
        ).result_rows  # fmt: skip
        return [
            (UsageEvent(event_id, tenant, subscription, meter, quantity, as_utc(at), source,
                        decode_properties(props)), bytes(mark), int(partition))
            for event_id, meter, quantity, at, source, props, mark, partition in rows
        ]  # fmt: skip

    def find(
        self,
        tenant: str,
        *,
        ids: Sequence[str] = (),
        subscription: str | None = None,
        meter: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[UsageEvent, bytes]]:
        """Billable events of ``tenant`` by id, or by subscription, meter and time range."""
        where = ["tenant = {tenant:String}"]
        for clause, given in (("event_id IN {ids:Array(String)}", ids),
                              ("subscription = {subscription:String}", subscription),
                              ("meter = {meter:String}", meter),
                              ("timestamp >= {since:DateTime64(3, 'UTC')}", since),
                              ("timestamp < {until:DateTime64(3, 'UTC')}", until)):  # fmt: skip
            if given:
                where.append(clause)
        rows = self._client.query(
            "SELECT event_id, subscription, meter, quantity, timestamp, source, properties, "
            f"dedupe_key FROM {self._table('billable_events')} WHERE {' AND '.join(where)} "
            "ORDER BY subscription, timestamp, event_id, meter",
            parameters={"tenant": tenant, "ids": list(ids), "subscription": subscription,
                        "meter": meter, "since": since, "until": until},
            column_formats={"dedupe_key": "bytes"},
        ).result_rows  # fmt: skip
        return [
            (UsageEvent(event_id, tenant, sub, meter_id, quantity, as_utc(at), source,
                        decode_properties(props)), bytes(mark))
            for event_id, sub, meter_id, quantity, at, source, props, mark in rows
        ]  # fmt: skip

    def known_marks(self, tenant: str, marks: Sequence[bytes]) -> set[bytes]:
        """Which of ``marks`` (dedupe keys) events of ``tenant`` stored and committed have,
        whatever their period: a backfill adds an event once."""
        return self._marks("events", tenant, marks)

    def retracted_marks(self, tenant: str, marks: Sequence[bytes]) -> set[bytes]:
        """Which of ``marks`` are of events committed corrections retracted."""
        return self._marks("retracted_events", tenant, marks)

    def _marks(self, table: str, tenant: str, marks: Sequence[bytes]) -> set[bytes]:
        if not marks:
            return set()
        committed = f"correction IN {self._committed()}"
        condition = f"(correction = '' OR {committed})" if table == "events" else committed
        rows = self._client.query(
            f"SELECT DISTINCT dedupe_key FROM {self._table(table)} "
            "WHERE tenant = {tenant:String} AND dedupe_key IN {marks:Array(FixedString(16))} "
            f"AND {condition}",
            parameters={"tenant": tenant, "marks": list(marks)},
            column_formats={"dedupe_key": "bytes"},
        ).result_rows
        return {bytes(mark) for (mark,) in rows}

    def retracted_ids(self, tenant: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` name events committed corrections retracted."""
        rows = self._client.query(
            f"SELECT DISTINCT event_id FROM {self._table('retracted_events')} FINAL "
            "WHERE tenant = {tenant:String} AND event_id IN {ids:Array(String)} "
            f"AND correction IN {self._committed()}",
            parameters={"tenant": tenant, "ids": list(ids)},
        ).result_rows
        return {str(event_id) for (event_id,) in rows}

    def store_changes(self, plan: Plan, at: datetime) -> None:
        """The events ``plan`` adds and the retractions it makes. Written again by a commit
        finished later, they fold into the same rows."""
        if plan.added:
            self._store_added(plan, at)
        if plan.retracted:
            self._client.insert(
                self._table("retracted_events"),
                [[plan.tenant, r.subscription, r.meter, bytes.fromhex(r.mark), r.event_id,
                  r.quantity, r.timestamp, plan.correction, plan.by, plan.reason, at]
                 for r in plan.retracted],
                column_names=["tenant", "subscription", "meter", "dedupe_key", "event_id",
                              "quantity", "timestamp", "correction", "retracted_by", "reason",
                              "retracted_at"],
            )  # fmt: skip

    def _store_added(self, plan: Plan, at: datetime) -> None:
        events = plan.added
        self._client.insert(
            self._table("events"),
            [[e.tenant, e.subscription, e.meter, e.source, e.id, e.quantity, e.timestamp,
              dedupe_key(e), plan.homes.get(e.subscription, 0), BACKFILL_EPOCH, 0, index,
              len(events), properties.decode(), at, plan.correction]
             for index, (e, properties) in enumerate(zip(events, properties_json(events),
                                                         strict=True))],
            column_names=["tenant", "subscription", "meter", "source", "event_id", "quantity",
                          "timestamp", "dedupe_key", "kafka_partition", "log_epoch",
                          "kafka_offset", "event_index", "record_events", "properties",
                          "ingested_at", "correction"],
        )  # fmt: skip

    def stored_totals(self, tenant: str, touched: Touched) -> list[StoredTotal]:
        """The rows of ``touched``'s totals as stored, with their versions."""
        rows = self._client.query(
            "SELECT subscription, meter, period_start, plan, plan_version, group_key, "
            "kafka_partition, log_epoch, kafka_offset, event_index, toString(log_position) "
            f"FROM {self._table('rated_usage')} FINAL WHERE tenant = {{tenant:String}} "
            "AND period_start = {period:Date} AND subscription = {subscription:String} "
            "AND meter IN {meters:Array(String)}",
            parameters={"tenant": tenant, "period": touched.period,
                        "subscription": touched.subscription, "meters": list(touched.meters)},
        ).result_rows  # fmt: skip
        return [
            StoredTotal(TotalKey(tenant, sub, meter, period, plan, version, group), partition,
                        ordinal(epoch, offset), index, int(position))
            for sub, meter, period, plan, version, group, partition, epoch, offset, index,
            position in rows
        ]  # fmt: skip

    def rewrite_totals(
        self, rows: RatedRows, stored: Sequence[StoredTotal], homes: dict[str, int]
    ) -> None:
        """``rows`` over the stored totals of their keys: each keeps the position its stored
        row carries (a new one, the start of its subscription's partition) and takes a
        version one above it, so it replaces the row however often it is rewritten."""
        before = {total.key: total for total in stored}
        now = datetime.now(UTC)
        written = []
        for total in rows:
            key = total.key
            old = before.get(key)
            partition = old.partition if old else homes.get(key.subscription, 0)
            position = old.offset if old else 0
            written.append([
                key.tenant, key.subscription, key.meter, key.group, key.period_start, key.plan,
                key.plan, key.plan_version, total.currency, total.quantity, total.value_at,
                total.quantity if total.aggregate is None else total.aggregate, total.events,
                total.fees_nanos, total.last_value, total.amount, partition, position >> 64,
                position & ((1 << 64) - 1), old.index if old else 0,
                (old.version if old else 0) + 1, now,
            ])  # fmt: skip
        if written:
            self._client.insert(
                self._table("rated_usage"), written,
                column_names=["tenant", "subscription", "meter", "group_key", "period_start",
                              "plan", "plan_key", "plan_version", "currency", "quantity",
                              "value_at", "aggregate", "events", "fees", "last_value", "amount",
                              "kafka_partition", "log_epoch", "kafka_offset", "event_index",
                              "log_position", "updated_at"],
            )  # fmt: skip

    def corrected_periods(self, tenant: str | None) -> dict[tuple[str, str], set[date]]:
        """Per (tenant, subscription), the periods corrections (pending or committed) touched."""
        found: dict[tuple[str, str], set[date]] = defaultdict(set)
        for entry in self.journal(tenant):
            for touched in entry.plan.touched:
                found[(entry.plan.tenant, touched.subscription)].add(touched.period)
        return found

    def _committed(self) -> str:
        return _COMMITTED.format(corrections=self._table("corrections"))
