"""The store of alert rules and of the crossings the worker found (``alerts``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pyarrow as pa

from aggregation.alerts import AlertRule
from aggregation.model import Crossing
from base.clickhouse import AMOUNT, TIMESTAMP, TableStore, and_tenant, as_utc
from rating.money import trimmed

_RULE_COLUMNS = (
    "tenant, rule_id, scope, target, metric, threshold, meter, feature, version, removed"
)
_CROSSING_COLUMNS = ("tenant, crossing_id, subscription, rule_id, rule_version, period_start, "
                     "metric, threshold, value, crossed_at, kafka_partition")  # fmt: skip


class AlertStore(TableStore):
    def write_rule(self, rule: AlertRule) -> AlertRule:
        """A rule, new, changed or removed; the stored version is returned (the latest
        write wins, and the worker reads rules by version)."""
        now = datetime.now(UTC)
        written = msgspec.structs.replace(rule, version=int(now.timestamp() * 1_000_000))
        self._client.insert(
            self._table("alert_rules"),
            [[written.tenant, written.id, written.scope, written.target, written.metric,
              written.meter, written.feature, Decimal(written.threshold), written.removed,
              now, written.version]],
            column_names=["tenant", "rule_id", "scope", "target", "metric", "meter", "feature",
                          "threshold", "removed", "created_at", "version"],
        )  # fmt: skip
        return written

    def rules_written_since(self, version: int) -> list[AlertRule]:
        """Every rule row with a version above ``version``, removals included."""
        rows = self._client.query(
            f"SELECT {_RULE_COLUMNS} FROM {self._table('alert_rules')} FINAL "
            "WHERE version > {version:Int64} ORDER BY version",
            parameters={"version": version},
        ).result_rows
        return [_rule(row) for row in rows]

    def rules(self, tenant: str | None = None) -> list[AlertRule]:
        """The rules in force."""
        rows = self._client.query(
            f"SELECT {_RULE_COLUMNS} FROM {self._table('alert_rules')} FINAL "
            "WHERE NOT removed" + and_tenant(tenant) + " ORDER BY tenant, rule_id",
            parameters={"tenant": tenant},
        ).result_rows
        return [_rule(row) for row in rows]

    def write_crossings(self, crossings: Sequence[Crossing]) -> None:
        self._client.insert_arrow(self._table("alert_crossings"), pa.table({
            "tenant": [c.tenant for c in crossings],
            "crossing_id": [c.id for c in crossings],
            "subscription": [c.subscription for c in crossings],
            "rule_id": [c.rule for c in crossings],
            "rule_version": pa.array([c.rule_version for c in crossings], type=pa.uint64()),
            "period_start": pa.array([c.period for c in crossings], type=pa.date32()),
            "metric": [c.metric for c in crossings],
            "threshold": pa.array([c.threshold for c in crossings], type=AMOUNT),
            "value": pa.array([c.value for c in crossings], type=AMOUNT),
            "crossed_at": pa.array([c.crossed_at for c in crossings], type=TIMESTAMP),
            "kafka_partition": pa.array([c.partition for c in crossings], type=pa.uint32()),
        }))  # fmt: skip

    def crossings(self, tenant: str | None = None, since: datetime | None = None) -> list[Crossing]:
        """Crossings found, oldest first (of those at or after ``since``)."""
        rows = self._client.query(
            f"SELECT {_CROSSING_COLUMNS} FROM {self._table('alert_crossings')} FINAL "
            "WHERE crossed_at >= {since:DateTime64(3, 'UTC')}"
            + and_tenant(tenant)
            + " ORDER BY crossed_at, crossing_id",
            parameters={"tenant": tenant, "since": since or datetime(1970, 1, 1, tzinfo=UTC)},
        ).result_rows
        return [
            Crossing(id_, tenant_, subscription, rule, version, period, metric,
                     Decimal(threshold), Decimal(value), as_utc(at), partition)
            for (tenant_, id_, subscription, rule, version, period, metric, threshold, value,
                 at, partition) in rows
        ]  # fmt: skip


def _rule(row: Sequence[object]) -> AlertRule:
    tenant, rule_id, scope, target, metric, threshold, meter, feature, version, removed = row
    assert isinstance(threshold, Decimal) and isinstance(version, int)
    return AlertRule(
        str(tenant), str(rule_id), str(scope), str(target), str(metric), trimmed(threshold),
        str(meter), str(feature), version, bool(removed),
    )  # fmt: skip
