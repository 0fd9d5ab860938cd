"""What the pipeline wrote, read back, typed: rated totals (for the usage API, invoices and
reports), the events behind them (for an invoice line's explanation and daily usage), and
every event the worker took from the log, accounted once (for reconciliation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgspec

from aggregation.log_identity import ordinal
from aggregation.model import RatedTotal
from base.clickhouse import TableStore, and_tenant

_WINDOWS = {"hour": "toStartOfHour", "day": "toStartOfDay"}
_AGGREGATES = {
    "sum": "sum(quantity)",
    "count": "count()",
    "max": "max(quantity)",
    "min": "min(quantity)",
    # The mean rounded half up, as the worker keeps it (``state.average``), in 128 bits.
    "avg": "toInt64(intDivOrZero(2 * toInt128(sum(quantity)) + count(), 2 * count()))",
    "latest": "argMax(quantity, timestamp)",
    "unique_count": "uniqExact(JSONExtractRaw(properties, {unique:String}))",
}


@dataclass(frozen=True, slots=True)
class EventsOf:
    """The deduplicated events of one meter (and group) of a subscription, stamped in
    [since, until)."""

    tenant: str
    subscription: str
    meter: str
    group: str  # a rated total's group key (JSON), "" for all of the meter's events
    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class EventWindow:
    start: datetime
    events: int
    quantity: int  # in the meter's scale
    late: int  # stored after ``late_after``


class PipelineReads(TableStore):
    def rated_totals(
        self, period: date, tenant: str | None = None, subscription: str | None = None
    ) -> list[RatedTotal]:
        """The period's rated totals: all, one tenant's, or one subscription's (the table's
        sort key leads with tenant and period, so one subscription reads a few granules),
        by subscription, meter, plan version and group."""
        where = "period_start = {period:Date}"
        if tenant is not None:
            where += " AND tenant = {tenant:String}"
        if subscription is not None:
            where += " AND subscription = {subscription:String}"
        rows = self._client.query(
            "SELECT tenant, subscription, meter, group_key, period_start, plan, plan_version, "
            "currency, quantity, amount, kafka_partition, log_epoch, kafka_offset, event_index, "
            f"value_at, events, fees, aggregate, last_value FROM {self._table('rated_usage')} "
            f"FINAL WHERE {where} "
            "ORDER BY tenant, subscription, meter, plan_version, group_key",
            parameters={"period": period, "tenant": tenant, "subscription": subscription},
        ).result_rows
        return [
            RatedTotal(tenant, sub, meter, group, start, plan, version, currency, quantity,
                       int(amount.scaleb(9)), partition, ordinal(epoch, offset), index, at,
                       events, fees, aggregate, last)
            for (tenant, sub, meter, group, start, plan, version, currency, quantity, amount,
                 partition, epoch, offset, index, at, events, fees, aggregate, last) in rows
        ]  # fmt: skip

    def rated_by_subscription(
        self, period: date, tenant: str | None, limit: int
    ) -> list[tuple[str, str, str, Decimal]]:
        """The subscriptions with the largest rated usage of the period: (tenant,
        subscription, currency, amount), largest first."""
        rows = self._client.query(
            "SELECT tenant, subscription, currency, sum(amount) AS amount "
            f"FROM {self._table('rated_usage')} FINAL WHERE period_start = {{period:Date}}"
            + and_tenant(tenant)
            + " GROUP BY tenant, subscription, currency "
            "ORDER BY amount DESC, subscription LIMIT {limit:UInt32}",
            parameters={"period": period, "tenant": tenant, "limit": limit},
        ).result_rows
        return [(tenant, sub, currency, Decimal(amount)) for tenant, sub, currency, amount in rows]

    def daily_usage(
        self, start: date, end: date, tenant: str | None
    ) -> list[tuple[str, date, int, int, int]]:
        """Per meter and day in [start, end): (meter, day, events, subscriptions, quantity)."""
        rows = self._client.query(
            "SELECT meter, day, sum(events), sum(subscriptions), sum(quantity) "
            f"FROM {self._table('usage_daily')} "
            "WHERE day >= {start:Date} AND day < {end:Date}" + and_tenant(tenant) + " "
            "GROUP BY meter, day ORDER BY meter, day",
            parameters={"start": start, "end": end, "tenant": tenant},
        ).result_rows
        return [(meter, day, int(events), int(subs), int(quantity))
                for meter, day, events, subs, quantity in rows]  # fmt: skip

    def daily_by_meter(
        self, tenant: str, subscriptions: Sequence[str], since: date, until: date
    ) -> list[tuple[str, date, int]]:
        """(meter, day, quantity in the meter's scale) of billable usage of ``subscriptions``
        on the days in [since, until)."""
        rows = self._client.query(
            "SELECT meter, toDate(window_start) AS day, sum(quantity) "
            f"FROM {self._table('usage_hourly')} WHERE tenant = {{tenant:String}} "
            "AND subscription IN {subs:Array(String)} AND window_start >= {since:Date} "
            "AND window_start < {until:Date} GROUP BY meter, day ORDER BY meter, day",
            parameters={"tenant": tenant, "subs": list(subscriptions), "since": since,
                        "until": until},
        ).result_rows  # fmt: skip
        return [(meter, day, int(quantity)) for meter, day, quantity in rows]

    def event_windows(self, events: EventsOf, window: str, late_after: datetime) -> (
        list[EventWindow]
    ):  # fmt: skip
        """``events`` by hour or day (``window``), counting those stored after
        ``late_after`` (usage that reached an invoice already finalized)."""
        where, params = _filter(events)
        rows = self._client.query(
            f"SELECT {_WINDOWS[window]}(timestamp) AS window, count(), sum(quantity), "
            "countIf(ingested_at > {late_after:DateTime64(3, 'UTC')}) "
            f"FROM {self._table('billable_events')} WHERE {where} GROUP BY window ORDER BY window",
            parameters={**params, "late_after": late_after},
        ).result_rows
        return [EventWindow(start, int(count), int(total), int(late))
                for start, count, total, late in rows]  # fmt: skip

    def event_aggregate(
        self, events: EventsOf, aggregation: str, unique: str = "", per_ms: int = 1
    ) -> int:
        """What ``events`` come to under a meter's ``aggregation`` (``unique``: the property
        a unique count counts; ``per_ms``: a weighted sum's time unit), in the meter's
        scale."""
        where, params = _filter(events)
        if aggregation == "weighted_sum":
            # Each value times the time to the next report (on a tie, the one further
            # along the log), the last one's to the window's end; rounded half up as the
            # worker does (``state.weighted``).
            found = self._client.query(
                "SELECT intDiv(2 * toInt128(sum(quantity * (next - at))) + {per:Int64}, "
                "2 * {per:Int64}) FROM (SELECT quantity, toUnixTimestamp64Milli(timestamp) AS at, "
                "leadInFrame(toUnixTimestamp64Milli(timestamp), 1, "
                "toUnixTimestamp64Milli({until:DateTime64(3, 'UTC')})) OVER (ORDER BY timestamp, "
                "log_epoch, kafka_offset, event_index ROWS BETWEEN CURRENT ROW AND UNBOUNDED "
                f"FOLLOWING) AS next FROM {self._table('billable_events')} WHERE {where})",
                parameters={**params, "per": per_ms},
            ).result_rows[0][0]
            return int(found or 0)
        found = self._client.query(
            f"SELECT {_AGGREGATES[aggregation]} FROM {self._table('billable_events')} "
            f"WHERE {where}",
            parameters={**params, "unique": unique},
        ).result_rows[0][0]
        return int(found or 0)

    def rejections_by_reason(self) -> dict[str, int]:
        rows = self._client.query(
            f"SELECT reason, count() FROM {self._table('rejected_events')} FINAL "
            "GROUP BY reason ORDER BY reason"
        ).result_rows
        return {str(reason): int(count) for reason, count in rows}

    def _accounted(self, tenant: str | None, month: date | None, since: datetime | None) -> (
        tuple[str, dict[str, Any]]
    ):  # fmt: skip
        """The accounted events (``_ACCOUNTED``) of one tenant, usage month and writing time,
        as a subquery and its parameters."""
        union = _ACCOUNTED.format(events=self._table("events"),
                                  duplicates=self._table("duplicate_events"),
                                  rejected=self._table("rejected_events"),
                                  forwarded=self._table("forwarded_events"))  # fmt: skip
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
        """(tenant, usage month, kind, events): billed, duplicate, dead_lettered or
        forwarded."""
        accounted, given = self._accounted(tenant, month, None)
        rows = self._client.query(
            f"SELECT tenant, toStartOfMonth(timestamp) AS month, kind, count() FROM {accounted} "
            "GROUP BY tenant, month, kind ORDER BY tenant, month, kind",
            parameters=given,
        ).result_rows
        return [(tenant, month, kind, int(count)) for tenant, month, kind, count in rows]

    def corrected_by_month(
        self, tenant: str | None = None, month: date | None = None
    ) -> list[tuple[str, date, int, int]]:
        """(tenant, usage month, events backfilled, events retracted) by committed
        corrections: what makes the billable events differ from those the log brought."""
        committed = (f"(SELECT correction FROM {self._table('corrections')} FINAL "
                     "WHERE status = 'committed')")  # fmt: skip
        where = and_tenant(tenant) + ("" if month is None else
                                      " AND toStartOfMonth(timestamp) = {month:Date}")  # fmt: skip
        rows = self._client.query(
            "SELECT tenant, month, sum(added), sum(taken) FROM ("
            "SELECT tenant, toStartOfMonth(timestamp) AS month, 1 AS added, 0 AS taken "
            f"FROM {self._table('events')} FINAL WHERE correction IN {committed}{where} "
            "UNION ALL SELECT tenant, toStartOfMonth(timestamp), 0, 1 "
            f"FROM {self._table('retracted_events')} FINAL WHERE correction IN {committed}{where}"
            ") GROUP BY tenant, month ORDER BY tenant, month",
            parameters={"tenant": tenant, "month": month},
        ).result_rows
        return [(who, when, int(added), int(taken)) for who, when, added, taken in rows]

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
        rows = self._client.query(
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
        rows = self._client.query(
            "SELECT kafka_partition, log_epoch, min(kafka_offset), max(kafka_offset), "
            f"uniqExact(kafka_offset) FROM {accounted} GROUP BY kafka_partition, log_epoch "
            "ORDER BY kafka_partition, log_epoch",
            parameters=given,
        ).result_rows
        return [tuple(int(v) for v in row) for row in rows]  # type: ignore[misc]


def _filter(events: EventsOf) -> tuple[str, dict[str, Any]]:
    where = (
        "tenant = {tenant:String} AND subscription = {subscription:String} "
        "AND meter = {meter:String} AND timestamp >= {since:DateTime64(3, 'UTC')} "
        "AND timestamp < {until:DateTime64(3, 'UTC')}"
    )
    params: dict[str, Any] = {
        "tenant": events.tenant, "subscription": events.subscription, "meter": events.meter,
        "since": events.since, "until": events.until,
    }  # fmt: skip
    group = msgspec.json.decode(events.group) if events.group else {}
    for position, (name, value) in enumerate(group.items()):
        params[f"name{position}"] = name
        if value is None:
            where += f" AND NOT JSONHas(properties, {{name{position}:String}})"
        else:
            params[f"value{position}"] = msgspec.json.encode(value).decode()
            where += (
                f" AND JSONExtractRaw(properties, {{name{position}:String}}) = "
                f"{{value{position}:String}}"
            )
    return where, params


# Every event the worker took from the log, once: billed, a duplicate, or dead-lettered,
# each row with its position and how many events its record held (see invoicing/reconcile).
# Events a correction backfilled never came through the log (``aggregation.corrections``).
_ACCOUNTED = """
    SELECT tenant, subscription, timestamp, 'billed' AS kind, kafka_partition, log_epoch,
           kafka_offset, record_events, ingested_at AS written_at FROM {events} FINAL
    WHERE correction = ''
    UNION ALL
    SELECT tenant, subscription, timestamp, 'duplicate', kafka_partition, log_epoch,
           kafka_offset, record_events, detected_at FROM {duplicates} FINAL
    UNION ALL
    SELECT tenant, subscription, ifNull(timestamp, rejected_at), 'dead_lettered',
           kafka_partition, log_epoch, kafka_offset, record_events, rejected_at
    FROM {rejected} FINAL
    UNION ALL
    SELECT tenant, subscription, timestamp, 'forwarded', kafka_partition, log_epoch,
           kafka_offset, record_events, forwarded_at FROM {forwarded} FINAL
"""
