"""The ClickHouse store: one clickhouse-connect client, chDB embedded or a server, same SQL.

Writes go through Arrow so that amounts stay exact Decimal(38, 9) without a
Python object per value; reads of money return ``decimal.Decimal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import numpy as np
import pyarrow as pa

from aggregation.batch import AcceptedEvent, BatchResult, RatedTotal
from aggregation.log_identity import EPOCH_SHIFT, OFFSET_MASK, Checkpoint, ordinal
from aggregation.state import Position, Total, TotalKey
from aggregation.subscriptions import Entry
from invoicing import migrations
from invoicing.invoice import Customer, Subscriber
from meterline.events import encode_properties
from meterline.processes import DirectoryLock, describe
from meterline.settings import Settings
from rating.period import PlanChanges

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_AMOUNT = pa.decimal128(38, 9)


class StoreError(RuntimeError):
    """The store cannot be reached or answered with an error."""


@dataclass(frozen=True)
class SubscriptionChange:
    """One entry of a subscription's history: what was done, when, and from when on."""

    tenant: str
    subscription: str
    recorded_at: datetime
    kind: str  # imported, cancelled, renewed
    effective_at: datetime | None
    plan: str
    detail: str = ""


@dataclass(frozen=True)
class SubscriptionRow:
    tenant: str
    subscription: str
    customer: str
    plan: str
    started_at: datetime
    ended_at: datetime | None = None
    changes: PlanChanges = ()  # (first day on the plan, plan), in day order
    anchor_day: int = 1  # the day of the month its billing periods start on (1 to 28)


def nanos_to_decimal_array(nanos: np.ndarray) -> pa.Array:
    """int64 nano-units as exact decimal128(38, 9): the unscaled integer is the nano count."""
    nanos = np.ascontiguousarray(nanos, dtype=np.int64)
    words = np.empty(nanos.shape[0] * 2, dtype=np.int64)
    words[0::2] = nanos
    words[1::2] = nanos >> 63  # sign extension into the high 64 bits
    return pa.Array.from_buffers(_AMOUNT, nanos.shape[0], [None, pa.py_buffer(words)])


class StoreInUseError(StoreError):
    """Another process owns the chDB directory (chDB allows one process per directory)."""


class Store:
    def __init__(self, client: Any, database: str, locked: Path | None = None) -> None:
        self.client = client
        self.database = database
        self._locked = locked  # the chDB directory this store holds the lock of

    @classmethod
    def connect(cls, settings: Settings) -> Store:
        locked = None
        if settings.clickhouse_url is None:
            locked = settings.chdb_path
            holder = DirectoryLock.take(locked)
            if holder is not None:
                raise StoreInUseError(
                    f"the store {locked} is in use by process {describe(holder)}: chDB lets one "
                    f"process open it. Stop that process (kill {holder}) if it is a leftover, "
                    "or run this against a ClickHouse server (CLICKHOUSE_URL)"
                )
        try:
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn())
        except Exception as error:
            if locked is not None:
                DirectoryLock.release(locked)
            raise StoreError(f"cannot open ClickHouse: {error}") from error
        return cls(client, settings.clickhouse_database, locked)

    def close(self) -> None:
        self.client.close()
        if self._locked is not None:
            DirectoryLock.release(self._locked)
            self._locked = None

    def table_sizes(self) -> dict[str, tuple[int, int]]:
        """table -> (rows, compressed bytes), from the active parts."""
        result = self.client.query(
            "SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts "
            "WHERE database = {database:String} AND active GROUP BY table",
            parameters={"database": self.database},
        )
        return {table: (int(rows), int(size)) for table, rows, size in result.result_rows}

    def ping(self) -> None:
        self.client.command("SELECT 1")

    def table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def migrate(self) -> list[migrations.Migration]:
        return migrations.migrate(self.client, self.database)

    def drop_database(self) -> None:
        self.client.command(f"DROP DATABASE IF EXISTS {self.database}")

    def write_subscriptions(self, rows: Sequence[SubscriptionRow], version: int) -> None:
        table = pa.table(
            {
                "tenant": [row.tenant for row in rows],
                "subscription": [row.subscription for row in rows],
                "customer": [row.customer for row in rows],
                "plan": [row.plan for row in rows],
                "started_at": pa.array([row.started_at for row in rows], type=_TIMESTAMP),
                "ended_at": pa.array([row.ended_at for row in rows], type=_TIMESTAMP),
                "change_days": pa.array(
                    [[day for day, _ in row.changes] for row in rows], type=pa.list_(pa.date32())
                ),
                "change_plans": pa.array(
                    [[plan for _, plan in row.changes] for row in rows], type=pa.list_(pa.string())
                ),
                "version": pa.array([version] * len(rows), type=pa.uint64()),
                "anchor_day": pa.array([row.anchor_day for row in rows], type=pa.uint8()),
            }
        )
        self.client.insert_arrow(self.table("subscriptions"), table)

    def subscribers(self, tenant: str | None = None) -> list[Subscriber]:
        """Every subscription (of one tenant), with the days it is active."""
        return [
            Subscriber(r.tenant, r.subscription, r.customer, r.plan, _day(r.started_at),
                       _day(r.ended_at) if r.ended_at else None, r.changes, r.anchor_day)
            for r in self.subscription_rows(tenant)
        ]  # fmt: skip

    def subscription_rows(
        self, tenant: str | None = None, subscription: str | None = None, limit: int = 0
    ) -> list[SubscriptionRow]:
        """Subscriptions as stored (of one tenant; one of them), in id order; the first
        ``limit`` when it is not 0."""
        named = {"tenant": tenant, "subscription": subscription}
        rows = self.client.query(
            "SELECT tenant, subscription, customer, plan, started_at, ended_at, change_days, "
            f"change_plans, anchor_day FROM {self.table('subscriptions')} FINAL "
            f"{_where(named)} ORDER BY tenant, subscription"
            + (" LIMIT {limit:UInt32}" if limit else ""),
            parameters={**named, "limit": limit},
        ).result_rows
        return [
            SubscriptionRow(tenant, sub, customer, plan, as_utc(started),
                            as_utc(ended) if ended else None, tuple(zip(days, plans, strict=True)),
                            anchor)
            for tenant, sub, customer, plan, started, ended, days, plans, anchor in rows
        ]  # fmt: skip

    def write_customers(self, rows: Sequence[Customer], version: int) -> None:
        table = pa.table(
            {
                "tenant": [row.tenant for row in rows],
                "customer": [row.customer for row in rows],
                "name": [row.name for row in rows],
                "external_id": [row.external_id for row in rows],
                "tax_rate": pa.array([row.tax_rate for row in rows], type=pa.decimal128(9, 4)),
                "currency": [row.currency for row in rows],
                "version": pa.array([version] * len(rows), type=pa.uint64()),
            }
        )
        self.client.insert_arrow(self.table("customers"), table)

    def customer(self, tenant: str, customer: str) -> Customer | None:
        rows = self.client.query(
            "SELECT tenant, customer, name, external_id, tax_rate, currency "
            f"FROM {self.table('customers')} FINAL "
            "WHERE tenant = {tenant:String} AND customer = {customer:String}",
            parameters={"tenant": tenant, "customer": customer},
        ).result_rows
        return Customer(*rows[0]) if rows else None

    def customers(self, tenant: str | None = None) -> dict[tuple[str, str], Customer]:
        where = "" if tenant is None else "WHERE tenant = {tenant:String}"
        rows = self.client.query(
            "SELECT tenant, customer, name, external_id, tax_rate, currency "
            f"FROM {self.table('customers')} FINAL {where}",
            parameters={"tenant": tenant},
        ).result_rows
        return {(row[0], row[1]): Customer(*row) for row in rows}

    def subscription_entries(self, since_version: int) -> list[tuple[tuple[str, str], Entry]]:
        """Subscriptions written with a version above ``since_version`` (every version of
        each, without FINAL: the reader keeps the highest)."""
        rows = self.client.query(
            "SELECT tenant, subscription, plan, ended_at, version, change_days, change_plans, "
            f"anchor_day FROM {self.table('subscriptions')} WHERE version > {{since:Int64}}",
            parameters={"since": since_version},
        ).result_rows
        return [
            ((tenant, sub), Entry(plan, as_utc(ended) if ended else None, version,
                                  tuple(zip(days, plans, strict=True)), anchor))
            for tenant, sub, plan, ended, version, days, plans, anchor in rows
        ]  # fmt: skip

    def subscription(self, tenant: str, subscription: str) -> SubscriptionRow | None:
        found = self.subscription_rows(tenant, subscription)
        return found[0] if found else None

    def record_changes(self, changes: Sequence[SubscriptionChange]) -> None:
        """Add to the subscriptions' history (never rewritten)."""
        self.client.insert_arrow(
            self.table("subscription_changes"),
            pa.table(
                {
                    "tenant": [c.tenant for c in changes],
                    "subscription": [c.subscription for c in changes],
                    "recorded_at": pa.array([c.recorded_at for c in changes], type=_TIMESTAMP),
                    "kind": [c.kind for c in changes],
                    "effective_at": pa.array([c.effective_at for c in changes], type=_TIMESTAMP),
                    "plan": [c.plan for c in changes],
                    "detail": [c.detail for c in changes],
                }
            ),
        )

    def history(self, tenant: str, subscription: str) -> list[SubscriptionChange]:
        rows = self.client.query(
            "SELECT tenant, subscription, recorded_at, kind, effective_at, plan, detail "
            f"FROM {self.table('subscription_changes')} "
            "WHERE tenant = {tenant:String} AND subscription = {subscription:String} "
            "ORDER BY recorded_at",
            parameters={"tenant": tenant, "subscription": subscription},
        ).result_rows
        return [
            SubscriptionChange(t, s, as_utc(at), kind, as_utc(eff) if eff else None, plan, detail)
            for t, s, at, kind, eff, plan, detail in rows
        ]

    def last_finalized_period(self, tenant: str, subscription: str) -> date | None:
        """The latest period of the subscription whose invoice is finalized."""
        found = self.client.query(
            f"SELECT max(period_start) FROM {self.table('invoices')} FINAL "
            "WHERE tenant = {tenant:String} AND subscription = {subscription:String} "
            "AND status = 'finalized'",
            parameters={"tenant": tenant, "subscription": subscription},
        ).result_rows
        period = found[0][0] if found else None
        return period if period and period.year > 1970 else None

    def write_batch(
        self, result: BatchResult, topic: str = "", checkpoints: Sequence[Checkpoint] = ()
    ) -> None:
        """New distinct values first, then rejections, distinct events and totals: see
        aggregation.state for why what survives of these writes after a crash converges.
        The checkpoints of ``topic``'s partitions come last: a checkpoint only ever names a
        record whose effects are durable (aggregation.log_identity)."""
        now = datetime.now(UTC)
        if result.distinct:
            self.client.insert_arrow(self.table("distinct_values"), _distinct(result, now))
        if result.rejected:
            self.client.insert_arrow(self.table("rejected_events"), _rejections(result, now))
        if result.repeated:
            self.client.insert_arrow(self.table("duplicate_events"), _duplicates(result, now))
        if result.accepted:
            self.client.insert_arrow(self.table("events"), _events(result, now))
        if result.rated:
            self.client.insert_arrow(self.table("rated_usage"), _rated(result.rated, now))
        if checkpoints:
            self.client.insert_arrow(
                self.table("log_checkpoints"), _checkpoints(topic, checkpoints, now)
            )

    def load_checkpoints(self, topic: str, partitions: set[int]) -> list[Checkpoint]:
        """The newest checkpoint of each of ``topic``'s partitions that has one."""
        rows = self.client.query(
            "SELECT kafka_partition, log_epoch, kafka_offset, fingerprint "
            f"FROM {self.table('log_checkpoints')} FINAL WHERE topic = {{topic:String}} "
            "AND kafka_partition IN {partitions:Array(UInt32)}",
            parameters={"topic": topic, "partitions": sorted(partitions)},
            column_formats={"fingerprint": "bytes"},
        ).result_rows
        return [Checkpoint(p, epoch, offset, bytes(held)) for p, epoch, offset, held in rows]

    def latest_epochs(self, topic: str, partitions: set[int]) -> dict[int, int]:
        """The highest epoch each partition has had, by checkpoint or by a new log found."""
        rows = self.client.query(
            "SELECT kafka_partition, max(log_epoch) FROM ("
            f"SELECT kafka_partition, log_epoch, topic FROM {self.table('log_checkpoints')} "
            "UNION ALL SELECT kafka_partition, log_epoch, topic "
            f"FROM {self.table('log_incarnations')}) "
            "WHERE topic = {topic:String} AND kafka_partition IN {partitions:Array(UInt32)} "
            "GROUP BY kafka_partition",
            parameters={"topic": topic, "partitions": sorted(partitions)},
        ).result_rows
        return {int(partition): int(epoch) for partition, epoch in rows}

    def record_new_log(
        self, topic: str, partition: int, epoch: int, previous_offset: int, reason: str
    ) -> None:
        """Remember that ``partition`` holds a new log from ``epoch`` on, and why."""
        self.client.insert(
            self.table("log_incarnations"),
            [[topic, partition, epoch, previous_offset, reason, datetime.now(UTC)]],
            column_names=["topic", "kafka_partition", "log_epoch", "previous_offset", "reason",
                          "found_at"],
        )  # fmt: skip

    def load_marks(self, partitions: set[int], since: datetime) -> Iterator[tuple[bytes, Position]]:
        """Dedupe marks of the events stored since ``since`` (the dedupe window)."""
        rows = self.client.query(
            "SELECT dedupe_key, kafka_partition, log_epoch, kafka_offset, event_index "
            f"FROM {self.table('events')} WHERE kafka_partition IN {{partitions:Array(UInt32)}} "
            "AND ingested_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"partitions": sorted(partitions), "since": since},
        ).result_rows
        for key, partition, epoch, offset, index in rows:
            mark = key if isinstance(key, bytes) else bytes(key, "latin-1")
            yield mark, (partition, ordinal(epoch, offset), index)

    def load_refusals(self, partitions: set[int], since: datetime) -> Iterator[Position]:
        """Positions of events refused because their total would overflow (see
        ``UsageState.refused``), rejected since ``since``."""
        rows = self.client.query(
            "SELECT kafka_partition, log_epoch, kafka_offset, event_index "
            f"FROM {self.table('rejected_events')} FINAL "
            "WHERE reason = 'amount_overflow' AND kafka_partition IN {partitions:Array(UInt32)} "
            "AND rejected_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"partitions": sorted(partitions), "since": since},
        ).result_rows
        for partition, epoch, offset, index in rows:
            yield partition, ordinal(epoch, offset), index

    def load_totals(
        self, partitions: set[int], since_period: date
    ) -> Iterator[tuple[TotalKey, Total]]:
        """Totals of the periods from ``since_period`` on: the ones events can still change."""
        rows = self.client.query(
            "SELECT tenant, subscription, meter, period_start, plan, plan_version, group_key, "
            "quantity, kafka_partition, log_epoch, kafka_offset, event_index, value_at "
            f"FROM {self.table('rated_usage')} FINAL "
            "WHERE kafka_partition IN {partitions:Array(UInt32)} "
            "AND period_start >= {since_period:Date}",
            parameters={"partitions": sorted(partitions), "since_period": since_period},
        ).result_rows
        for tenant, subscription, meter, period, plan, version, group, quantity, *rest in rows:
            key = (tenant, subscription, meter, period, plan, version, group)
            partition, epoch, offset, index, value_at = rest
            yield key, Total(quantity, partition, ordinal(epoch, offset), index, value_at)

    def load_distinct(
        self, partitions: set[int], since_period: date
    ) -> Iterator[tuple[TotalKey, int, bytes]]:
        """The distinct values unique counts have seen in the periods from ``since_period``."""
        rows = self.client.query(
            "SELECT DISTINCT tenant, subscription, meter, period_start, plan_key, plan_version, "
            "group_key, kafka_partition, value_digest "
            f"FROM {self.table('distinct_values')} "
            "WHERE kafka_partition IN {partitions:Array(UInt32)} "
            "AND period_start >= {since_period:Date}",
            parameters={"partitions": sorted(partitions), "since_period": since_period},
            column_formats={"value_digest": "bytes"},
        ).result_rows
        for tenant, subscription, meter, period, plan, version, group, partition, value in rows:
            key = (tenant, subscription, meter, period, plan, version, group)
            yield key, partition, bytes(value)

    def rated_usage(
        self, period: date, tenant: str | None = None, subscription: str | None = None
    ) -> list[dict[str, Any]]:
        """The period's rated totals: all, one tenant's, or one subscription's (the table's
        sort key leads with tenant and period, so one subscription reads a few granules)."""
        where = "period_start = {period:Date}"
        if tenant is not None:
            where += " AND tenant = {tenant:String}"
        if subscription is not None:
            where += " AND subscription = {subscription:String}"
        result = self.client.query(
            "SELECT tenant, subscription, period_start, plan, plan_version, meter, group_key, "
            "currency, quantity, amount "
            f"FROM {self.table('rated_usage')} FINAL WHERE {where} "
            "ORDER BY tenant, subscription, meter, plan_version, group_key",
            parameters={"period": period, "tenant": tenant, "subscription": subscription},
        )
        return _dicts(result)

    def usage_windows(
        self, tenant: str, subscription: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Hourly windows of one subscription's usage in [since, until), per meter."""
        result = self.client.query(
            "SELECT meter, window_start, events, quantity "
            f"FROM {self.table('usage_hourly')} "
            "WHERE tenant = {tenant:String} AND subscription = {subscription:String} "
            "AND window_start >= {since:DateTime64(3, 'UTC')} "
            "AND window_start < {until:DateTime64(3, 'UTC')} "
            "ORDER BY meter, window_start",
            parameters={"tenant": tenant, "subscription": subscription,
                        "since": since, "until": until},
        )  # fmt: skip
        return _dicts(result)

    def record_invoice_run(self, report: Any, tenant: str | None, at: datetime) -> None:
        """One row per close or finalize (a ``closing.CloseReport``)."""
        counts = ("created", "updated", "unchanged", "finalized", "already_final")
        self.client.insert(
            self.table("invoice_runs"),
            [[at, report.action, report.period, tenant or "",
              *(getattr(report, name) for name in counts), len(report.problems)]],
            column_names=["run_at", "action", "period_start", "tenant", *counts, "problems"],
        )  # fmt: skip

    def invoice_runs(self) -> dict[str, tuple[int, datetime]]:
        """action -> (runs, time of the last run)."""
        rows = self.client.query(
            f"SELECT action, count(), max(run_at) FROM {self.table('invoice_runs')} GROUP BY action"
        ).result_rows
        return {action: (int(runs), last) for action, runs, last in rows}

    def rejections_by_reason(self) -> dict[str, int]:
        rows = self.client.query(
            f"SELECT reason, count() FROM {self.table('rejected_events')} FINAL "
            "GROUP BY reason ORDER BY reason"
        ).result_rows
        return {str(reason): int(count) for reason, count in rows}

    def count(self, table: str, tenant: str | None = None) -> int:
        """Rows of ``table`` (of one tenant)."""
        named = {"tenant": tenant}
        query = f"SELECT count() FROM {self.table(table)} FINAL {_where(named)}"
        return int(self.client.command(query, parameters=named))

    def _accounted(self, tenant: str | None, month: date | None, since: datetime | None) -> (
        tuple[str, dict[str, Any]]
    ):  # fmt: skip
        """The accounted events (``_ACCOUNTED``) of one tenant, usage month and writing time,
        as a subquery and its parameters."""
        union = _ACCOUNTED.format(events=self.table("events"),
                                  duplicates=self.table("duplicate_events"),
                                  rejected=self.table("rejected_events"))  # fmt: skip
        given = {"tenant": tenant, "month": month, "since": since}
        where = [clause for name, clause in (
            ("tenant", "tenant = {tenant:String}"),
            ("month", "toStartOfMonth(timestamp) = {month:Date}"),
            ("since", "written_at >= {since:DateTime64(3, 'UTC')}"),
        ) if given[name] is not None]  # fmt: skip
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        return f"(SELECT * FROM ({union}) {condition})", given

    def accounted_by_kind(
        self, tenant: str | None = None, month: date | None = None
    ) -> list[tuple[str, date, str, int]]:
        """(tenant, usage month, kind, events): billed, duplicate or dead_lettered."""
        accounted, given = self._accounted(tenant, month, None)
        rows = self.client.query(
            f"SELECT tenant, toStartOfMonth(timestamp) AS month, kind, count() FROM {accounted} "
            "GROUP BY tenant, month, kind ORDER BY tenant, month, kind",
            parameters=given,
        ).result_rows
        return [(tenant, month, kind, int(count)) for tenant, month, kind, count in rows]

    def incomplete_records(
        self,
        tenant: str | None = None,
        month: date | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[tuple[int, int, int, int, int, str, str]]:
        """Records with fewer (or more) accounted events than they held, first by position:
        (partition, epoch, offset, held, accounted, a tenant and subscription of theirs)."""
        accounted, given = self._accounted(tenant, month, since)
        rows = self.client.query(
            "SELECT kafka_partition, log_epoch, kafka_offset, max(record_events) AS held, "
            f"count() AS found, any(tenant), any(subscription) FROM {accounted} "
            "GROUP BY kafka_partition, log_epoch, kafka_offset HAVING found != held "
            "ORDER BY kafka_partition, log_epoch, kafka_offset LIMIT {limit:UInt32}",
            parameters={**given, "limit": limit},
        ).result_rows
        return [tuple(row) for row in rows]

    def record_spans(self, since: datetime | None = None) -> list[tuple[int, int, int, int, int]]:
        """Per partition and epoch: (partition, epoch, first offset, last offset, records
        with an accounted event). Offsets between first and last with none are records
        nothing accounts for (and, having no row, no tenant either)."""
        accounted, given = self._accounted(None, None, since)
        rows = self.client.query(
            "SELECT kafka_partition, log_epoch, min(kafka_offset), max(kafka_offset), "
            f"uniqExact(kafka_offset) FROM {accounted} GROUP BY kafka_partition, log_epoch "
            "ORDER BY kafka_partition, log_epoch",
            parameters=given,
        ).result_rows
        return [tuple(int(v) for v in row) for row in rows]  # type: ignore[misc]

    def anchor_days(self, owners: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The anchor day of each of these subscriptions that is known."""
        rows = self.client.query(
            f"SELECT tenant, subscription, anchor_day FROM {self.table('subscriptions')} FINAL "
            "WHERE (tenant, subscription) IN {owners:Array(Tuple(String, String))}",
            parameters={"owners": list(owners)},
        ).result_rows
        return {(tenant, sub): anchor for tenant, sub, anchor in rows}


def as_utc(moment: datetime) -> datetime:
    """ClickHouse hands DateTime64 back without a zone; meterline's columns are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _where(named: dict[str, str | None]) -> str:
    """A WHERE clause binding each named value that is given; "" when none is."""
    given = [f"{name} = {{{name}:String}}" for name, value in named.items() if value is not None]
    return f"WHERE {' AND '.join(given)}" if given else ""


def _day(moment: datetime) -> date:
    """The UTC day a subscription moment falls on: a subscription is billed by whole days."""
    return (moment if moment.tzinfo is None else moment.astimezone(UTC)).date()


def _dicts(result: Any) -> list[dict[str, Any]]:
    """A query result as one dict per row, keyed by column name."""
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _positions(partitions: list[int], ordinals: list[int]) -> dict[str, pa.Array]:
    """The columns of positions whose offsets are ordinals (aggregation.log_identity). Per
    event, so it stays a comprehension of shifts; a batch all in epoch 0 needs none."""
    if not ordinals or max(ordinals) <= OFFSET_MASK:
        epochs: list[int] = [0] * len(ordinals)
        offsets = ordinals
    else:
        epochs = [position >> EPOCH_SHIFT for position in ordinals]
        offsets = [position & OFFSET_MASK for position in ordinals]
    return {
        "kafka_partition": pa.array(partitions, type=pa.uint32()),
        "log_epoch": pa.array(epochs, type=pa.uint32()),
        "kafka_offset": pa.array(offsets, type=pa.uint64()),
    }


def _checkpoints(topic: str, checkpoints: Sequence[Checkpoint], now: datetime) -> pa.Table:
    return pa.table(
        {
            "topic": [topic] * len(checkpoints),
            "kafka_partition": pa.array([c.partition for c in checkpoints], type=pa.uint32()),
            "log_epoch": pa.array([c.epoch for c in checkpoints], type=pa.uint32()),
            "kafka_offset": pa.array([c.offset for c in checkpoints], type=pa.uint64()),
            "fingerprint": pa.array([c.fingerprint for c in checkpoints], type=pa.binary(16)),
            "written_at": pa.array([now] * len(checkpoints), type=_TIMESTAMP),
        }
    )


def _rejections(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.rejected
    return pa.table(
        {
            **_positions([r.partition for r in rows], [r.offset for r in rows]),
            "event_index": pa.array([r.index for r in rows], type=pa.uint32()),
            "reason": [r.reason for r in rows],
            "detail": [r.detail for r in rows],
            "payload": [r.payload.decode("utf-8", "replace") for r in rows],
            "rejected_at": pa.array([now] * len(rows), type=_TIMESTAMP),
            "record_events": pa.array([r.record_events for r in rows], type=pa.uint32()),
            "tenant": [r.event.tenant if r.event else "" for r in rows],
            "subscription": [r.event.subscription if r.event else "" for r in rows],
            "timestamp": pa.array(
                [r.event.timestamp if r.event else None for r in rows], type=_TIMESTAMP
            ),
        }
    )


def _counted(rows: Sequence[AcceptedEvent]) -> dict[str, Any]:
    """The columns a billed event and a duplicate share: who, what, when, and where in
    the log (with the size of its record, for reconciliation)."""
    return {
        "tenant": [r.event.tenant for r in rows],
        "subscription": [r.event.subscription for r in rows],
        "meter": [r.event.meter for r in rows],
        "source": [r.event.source for r in rows],
        "event_id": [r.event.id for r in rows],
        "timestamp": pa.array([r.event.timestamp for r in rows], type=_TIMESTAMP),
        "dedupe_key": pa.array([r.dedupe_key for r in rows], type=pa.binary(16)),
        **_positions([r.partition for r in rows], [r.offset for r in rows]),
        "event_index": pa.array([r.index for r in rows], type=pa.uint32()),
        "record_events": pa.array([r.record_events for r in rows], type=pa.uint32()),
    }


def _duplicates(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.repeated
    return pa.table({**_counted(rows), "detected_at": pa.array([now] * len(rows), type=_TIMESTAMP)})


def _events(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.accepted
    return pa.table(
        {
            **_counted(rows),
            "quantity": pa.array([r.event.quantity for r in rows], type=pa.int64()),
            "properties": [encode_properties(r.event.properties) for r in rows],
            "ingested_at": pa.array([now] * len(rows), type=_TIMESTAMP),
        }
    )


def _distinct(result: BatchResult, now: datetime) -> pa.Table:
    keys = [key for key, _, _ in result.distinct]
    return pa.table(
        {
            "tenant": [k[0] for k in keys],
            "subscription": [k[1] for k in keys],
            "meter": [k[2] for k in keys],
            "period_start": pa.array([k[3] for k in keys], type=pa.date32()),
            "plan_key": [k[4] for k in keys],
            "plan_version": pa.array([k[5] for k in keys], type=pa.uint32()),
            "group_key": [k[6] for k in keys],
            "value_digest": pa.array([v for _, _, v in result.distinct], type=pa.binary(8)),
            "kafka_partition": pa.array([p for _, p, _ in result.distinct], type=pa.uint32()),
            "written_at": pa.array([now] * len(keys), type=_TIMESTAMP),
        }
    )


def _rated(rows: Iterable[RatedTotal], now: datetime) -> pa.Table:
    rows = list(rows)
    return pa.table(
        {
            "tenant": [r.tenant for r in rows],
            "subscription": [r.subscription for r in rows],
            "meter": [r.meter for r in rows],
            "group_key": [r.group for r in rows],
            "period_start": pa.array([r.period_start for r in rows], type=pa.date32()),
            "plan": [r.plan for r in rows],
            "plan_key": [r.plan for r in rows],
            "plan_version": pa.array([r.plan_version for r in rows], type=pa.uint32()),
            "currency": [r.currency for r in rows],
            "quantity": pa.array([r.quantity for r in rows], type=pa.int64()),
            "value_at": pa.array([r.value_at for r in rows], type=pa.int64()),
            "amount": nanos_to_decimal_array(
                np.fromiter((r.amount_nanos for r in rows), dtype=np.int64, count=len(rows))
            ),
            **_positions([r.partition for r in rows], [r.offset for r in rows]),
            "event_index": pa.array([r.index for r in rows], type=pa.uint32()),
            "updated_at": pa.array([now] * len(rows), type=_TIMESTAMP),
        }
    )


# Every event the worker took from the log, once: billed, a duplicate, or dead-lettered,
# each row with its position and how many events its record held (see invoicing/reconcile).
_ACCOUNTED = """
    SELECT tenant, subscription, timestamp, 'billed' AS kind, kafka_partition, log_epoch,
           kafka_offset, record_events, ingested_at AS written_at FROM {events} FINAL
    UNION ALL
    SELECT tenant, subscription, timestamp, 'duplicate', kafka_partition, log_epoch,
           kafka_offset, record_events, detected_at FROM {duplicates} FINAL
    UNION ALL
    SELECT tenant, subscription, ifNull(timestamp, rejected_at), 'dead_lettered',
           kafka_partition, log_epoch, kafka_offset, record_events, rejected_at
    FROM {rejected} FINAL
"""
