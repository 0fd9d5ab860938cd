"""The pipeline's sink: what a batch leaves is made durable here (raw events, duplicates,
rejections, forwarded events, distinct values, rated totals, and each partition's
checkpoint), and what a
worker needs back when it takes a partition over (dedupe marks, totals, refusals,
distinct values, checkpoints and epochs) is read from here. See ``state`` for why what
survives of a batch's writes after a crash converges, and ``log_identity`` for epochs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from aggregation.alert_store import AlertStore
from aggregation.log_identity import EPOCH_SHIFT, OFFSET_MASK, Checkpoint, ordinal
from aggregation.model import (
    BatchResult,
    EventRows,
    Position,
    RatedRows,
    Record,
    TotalKey,
)
from aggregation.state import Total
from base.clickhouse import (
    TIMESTAMP,
    TableStore,
    as_utc,
    nanos_to_decimal_array,
    same_moment,
    timestamps,
)
from base.events import UsageEvent, decode_properties, encode, properties_json


class PipelineSink(TableStore):
    def write_batch(
        self, result: BatchResult, topic: str = "", checkpoints: Sequence[Checkpoint] = ()
    ) -> None:
        """Alert crossings and new distinct values first, then rejections, distinct events
        and totals: see aggregation.state (and aggregation.alerts) for why what survives of
        these writes after a crash converges.
        The checkpoints of ``topic``'s partitions come last: a checkpoint only ever names a
        record whose effects are durable (aggregation.log_identity)."""
        now = datetime.now(UTC)
        if result.crossings:  # before the totals: a replay of a lost batch finds them again
            AlertStore(self.connection).write_crossings(result.crossings)
        if result.distinct:
            self._client.insert_arrow(self._table("distinct_values"), _distinct(result, now))
        if result.rejected:
            self._client.insert_arrow(self._table("rejected_events"), _rejections(result, now))
        if result.repeated:
            self._client.insert_arrow(self._table("duplicate_events"), _duplicates(result, now))
        if result.forwarded:
            self._client.insert_arrow(self._table("forwarded_events"), _forwarded(result, now))
        if result.accepted:
            self._client.insert_arrow(self._table("events"), _events(result, now))
        if result.rated:
            self._client.insert_arrow(self._table("rated_usage"), _rated(result.rated, now))
        if checkpoints:
            self._client.insert_arrow(
                self._table("log_checkpoints"), _checkpoints(topic, checkpoints, now)
            )

    def load_checkpoints(self, topic: str, partitions: set[int]) -> list[Checkpoint]:
        """The newest checkpoint of each of ``topic``'s partitions that has one."""
        rows = self._client.query(
            "SELECT kafka_partition, log_epoch, kafka_offset, fingerprint "
            f"FROM {self._table('log_checkpoints')} FINAL WHERE topic = {{topic:String}} "
            "AND kafka_partition IN {partitions:Array(UInt32)}",
            parameters={"topic": topic, "partitions": sorted(partitions)},
            column_formats={"fingerprint": "bytes"},
        ).result_rows
        return [Checkpoint(p, epoch, offset, bytes(held)) for p, epoch, offset, held in rows]

    def latest_epochs(self, topic: str, partitions: set[int]) -> dict[int, int]:
        """The highest epoch each partition has had, by checkpoint or by a new log found."""
        rows = self._client.query(
            "SELECT kafka_partition, max(log_epoch) FROM ("
            f"SELECT kafka_partition, log_epoch, topic FROM {self._table('log_checkpoints')} "
            "UNION ALL SELECT kafka_partition, log_epoch, topic "
            f"FROM {self._table('log_incarnations')}) "
            "WHERE topic = {topic:String} AND kafka_partition IN {partitions:Array(UInt32)} "
            "GROUP BY kafka_partition",
            parameters={"topic": topic, "partitions": sorted(partitions)},
        ).result_rows
        return {int(partition): int(epoch) for partition, epoch in rows}

    def record_new_log(
        self, topic: str, partition: int, epoch: int, previous_offset: int, reason: str
    ) -> None:
        """Remember that ``partition`` holds a new log from ``epoch`` on, and why."""
        self._client.insert(
            self._table("log_incarnations"),
            [[topic, partition, epoch, previous_offset, reason, datetime.now(UTC)]],
            column_names=["topic", "kafka_partition", "log_epoch", "previous_offset", "reason",
                          "found_at"],
        )  # fmt: skip

    def load_marks(self, partitions: set[int], since: datetime) -> Iterator[tuple[bytes, Position]]:
        """Dedupe marks of the events stored since ``since`` (the dedupe window)."""
        rows = self._client.query(
            "SELECT dedupe_key, kafka_partition, log_epoch, kafka_offset, event_index "
            f"FROM {self._table('events')} WHERE kafka_partition IN {{partitions:Array(UInt32)}} "
            "AND ingested_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"partitions": sorted(partitions), "since": since},
        ).result_rows
        for key, partition, epoch, offset, index in rows:
            mark = key if isinstance(key, bytes) else bytes(key, "latin-1")
            yield mark, Position(partition, ordinal(epoch, offset), index)

    def load_tail(self, partition: int, epoch: int, after: int | None) -> list[Record]:
        """The billed events stored in a partition's log (``epoch``) after the offset
        ``after`` (its last checkpoint; None: from its start), rebuilt as records at their
        places: each record holds its billed events at their indices, and null at the
        others (a duplicate's or a refusal's place, which the batch step refuses again and
        a caller ignores). What a batch cut short by a crash had made durable."""
        rows = self._client.query(
            "SELECT kafka_offset, event_index, event_id, tenant, subscription, meter, quantity, "
            f"timestamp, source, properties FROM {self._table('events')} FINAL "
            "WHERE kafka_partition = {partition:UInt32} AND log_epoch = {epoch:UInt32} "
            "AND kafka_offset >= {first:UInt64} ORDER BY kafka_offset, event_index",
            parameters={"partition": partition, "epoch": epoch,
                        "first": 0 if after is None else after + 1},
        ).result_rows  # fmt: skip
        placed: dict[int, dict[int, UsageEvent]] = {}
        for offset, index, event_id, tenant, sub, meter, quantity, at, source, props in rows:
            properties = decode_properties(props)
            placed.setdefault(offset, {})[index] = UsageEvent(
                event_id, tenant, sub, meter, quantity, as_utc(at), source, properties
            )
        return [
            Record(partition, ordinal(epoch, offset),
                   b"[" + b",".join(encode(events[i]) if i in events else b"null"
                                    for i in range(max(events) + 1)) + b"]")
            for offset, events in placed.items()
        ]  # fmt: skip

    def load_refusals(
        self, partitions: set[int], since: datetime
    ) -> Iterator[tuple[Position, str]]:
        """Positions of events the state refused as it counted them (their total would
        overflow, or a gauge's report came out of order; see ``UsageState.refused``),
        rejected since ``since``, each with its reason."""
        rows = self._client.query(
            "SELECT kafka_partition, log_epoch, kafka_offset, event_index, reason "
            f"FROM {self._table('rejected_events')} FINAL "
            "WHERE reason IN ('amount_overflow', 'out_of_order') "
            "AND kafka_partition IN {partitions:Array(UInt32)} "
            "AND rejected_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"partitions": sorted(partitions), "since": since},
        ).result_rows
        for partition, epoch, offset, index, reason in rows:
            yield Position(partition, ordinal(epoch, offset), index), reason

    def load_totals(
        self, partitions: set[int], since_period: date, live: RatedRows | None = None
    ) -> Iterator[tuple[TotalKey, Total]]:
        """Totals of the periods from ``since_period`` on: the ones events can still change.
        Given ``live``, it is filled in the same read with what the live usage holds of each
        (the quantity it prices, its amount and currency: ``live``)."""
        rows = self._client.query(
            "SELECT tenant, subscription, meter, period_start, plan, plan_version, group_key, "
            "aggregate, kafka_partition, log_epoch, kafka_offset, event_index, value_at, "
            "events, fees, last_value, currency, quantity, amount "
            f"FROM {self._table('rated_usage')} FINAL "
            "WHERE kafka_partition IN {partitions:Array(UInt32)} "
            "AND period_start >= {since_period:Date}",
            parameters={"partitions": sorted(partitions), "since_period": since_period},
        ).result_rows
        for tenant, subscription, meter, period, plan, version, group, aggregate, *rest in rows:
            key = TotalKey(tenant, subscription, meter, period, plan, version, group)
            partition, epoch, offset, index, value_at, events, fees, last, *rated = rest
            if live is not None:
                currency, quantity, amount = rated
                live.keys.append(key)
                live.currencies.append(currency)
                live.quantities.append(quantity)
                live.amounts_nanos.append(int(amount.scaleb(9)))
                live.partitions.append(partition)
            yield key, Total(aggregate, partition, ordinal(epoch, offset), index, value_at,
                             events, fees, last)  # fmt: skip

    def load_distinct(
        self, partitions: set[int], since_period: date
    ) -> Iterator[tuple[TotalKey, int, bytes]]:
        """The distinct values unique counts have seen in the periods from ``since_period``."""
        rows = self._client.query(
            "SELECT DISTINCT tenant, subscription, meter, period_start, plan_key, plan_version, "
            "group_key, kafka_partition, value_digest "
            f"FROM {self._table('distinct_values')} "
            "WHERE kafka_partition IN {partitions:Array(UInt32)} "
            "AND period_start >= {since_period:Date}",
            parameters={"partitions": sorted(partitions), "since_period": since_period},
            column_formats={"value_digest": "bytes"},
        ).result_rows
        for tenant, subscription, meter, period, plan, version, group, partition, value in rows:
            key = TotalKey(tenant, subscription, meter, period, plan, version, group)
            yield key, partition, bytes(value)


def _text(values: list[str]) -> pa.Array:
    """A string column. Named, because Arrow's inference of the type from a list of strings
    costs ten times the conversion itself (0.3 µs an event for each column)."""
    return pa.array(values, type=pa.string())


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
            "written_at": same_moment(now, len(checkpoints)),
        }
    )


def _rejections(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.rejected
    return pa.table(
        {
            **_positions([r.partition for r in rows], [r.offset for r in rows]),
            "event_index": pa.array([r.index for r in rows], type=pa.uint32()),
            "reason": _text([r.reason for r in rows]),
            "detail": _text([r.detail for r in rows]),
            "payload": _text([r.payload.decode("utf-8", "replace") for r in rows]),
            "rejected_at": same_moment(now, len(rows)),
            "record_events": pa.array([r.record_events for r in rows], type=pa.uint32()),
            "tenant": _text([r.event.tenant if r.event else "" for r in rows]),
            "subscription": _text([r.event.subscription if r.event else "" for r in rows]),
            "timestamp": pa.array(
                [r.event.timestamp if r.event else None for r in rows], type=TIMESTAMP
            ),
        }
    )


def _placed(
    events: Sequence[UsageEvent],
    partitions: Sequence[int],
    offsets: Sequence[int],
    indices: Sequence[int],
    record_events: Sequence[int],
) -> dict[str, Any]:
    """The columns every row about one event of the log has: who, what, when, and where in
    the log (with the size of its record, for reconciliation). Per event, so each column
    is one comprehension over the events themselves."""
    return {
        "tenant": _text([e.tenant for e in events]),
        "subscription": _text([e.subscription for e in events]),
        "meter": _text([e.meter for e in events]),
        "source": _text([e.source for e in events]),
        "event_id": _text([e.id for e in events]),
        "timestamp": timestamps([e.timestamp for e in events]),
        **_positions(list(partitions), list(offsets)),
        "event_index": pa.array(indices, type=pa.uint32()),
        "record_events": pa.array(record_events, type=pa.uint32()),
    }


def _counted(rows: EventRows) -> dict[str, Any]:
    """The columns a billed event and a duplicate share: ``_placed`` and the dedupe mark."""
    return {
        **_placed(rows.events, rows.partitions, rows.offsets, rows.indices, rows.record_events),
        "dedupe_key": pa.array(rows.marks, type=pa.binary(16)),
    }


def _forwarded(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.forwarded
    return pa.table(
        {
            **_placed(
                [r.event for r in rows],
                [r.partition for r in rows],
                [r.offset for r in rows],
                [r.index for r in rows],
                [r.record_events for r in rows],
            ),
            "home_partition": pa.array([r.home for r in rows], type=pa.uint32()),
            "forwarded_at": same_moment(now, len(rows)),
        }
    )


def _duplicates(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.repeated
    return pa.table({**_counted(rows), "detected_at": same_moment(now, len(rows))})


def _events(result: BatchResult, now: datetime) -> pa.Table:
    rows = result.accepted
    return pa.table(
        {
            **_counted(rows),
            "quantity": pa.array([e.quantity for e in rows.events], type=pa.int64()),
            "properties": pa.array(properties_json(rows.events), type=pa.binary()).cast(
                pa.string()
            ),
            "ingested_at": same_moment(now, len(rows)),
        }
    )


def _distinct(result: BatchResult, now: datetime) -> pa.Table:
    keys = [key for key, _, _ in result.distinct]
    return pa.table(
        {
            "tenant": _text([k.tenant for k in keys]),
            "subscription": _text([k.subscription for k in keys]),
            "meter": _text([k.meter for k in keys]),
            "period_start": pa.array([k.period_start for k in keys], type=pa.date32()),
            "plan_key": _text([k.plan for k in keys]),
            "plan_version": pa.array([k.plan_version for k in keys], type=pa.uint32()),
            "group_key": _text([k.group for k in keys]),
            "value_digest": pa.array([v for _, _, v in result.distinct], type=pa.binary(8)),
            "kafka_partition": pa.array([p for _, p, _ in result.distinct], type=pa.uint32()),
            "written_at": same_moment(now, len(keys)),
        }
    )


def _rated(rows: RatedRows, now: datetime) -> pa.Table:
    keys = rows.keys
    plans = [k.plan for k in keys]
    return pa.table(
        {
            "tenant": _text([k.tenant for k in keys]),
            "subscription": _text([k.subscription for k in keys]),
            "meter": _text([k.meter for k in keys]),
            "group_key": _text([k.group for k in keys]),
            "period_start": pa.array([k.period_start for k in keys], type=pa.date32()),
            "plan": _text(plans),
            "plan_key": _text(plans),
            "plan_version": pa.array([k.plan_version for k in keys], type=pa.uint32()),
            "currency": _text(rows.currencies),
            "quantity": pa.array(rows.quantities, type=pa.int64()),
            "value_at": pa.array(rows.values_at, type=pa.int64()),
            "aggregate": pa.array(rows.aggregates, type=pa.int64()),
            "events": pa.array(rows.events, type=pa.uint64()),
            "fees": pa.array(rows.fees_nanos, type=pa.int64()),
            "last_value": pa.array(rows.lasts, type=pa.int64()),
            "amount": nanos_to_decimal_array(np.array(rows.amounts_nanos, dtype=np.int64)),
            **_positions(rows.partitions, rows.offsets),
            "event_index": pa.array(rows.indices, type=pa.uint32()),
            "updated_at": same_moment(now, len(keys)),
        }
    )
