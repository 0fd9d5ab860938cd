"""The ClickHouse connection every stage's store opens: one clickhouse-connect client, chDB
embedded or a server, the same SQL. Opening it takes the chDB directory's lock (chDB lets
one process open a directory) and brings the schema up to date, once, where a command
opens it; each stage's store (``subscriptions.store``, ``aggregation.sink``,
``invoicing.ledger``...) then writes and reads its own tables through it.

Writes go through Arrow so that amounts stay exact Decimal(38, 9) without a Python object
per value; reads of money return ``decimal.Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import numpy as np
import pyarrow as pa

from base import migrations
from base.processes import DirectoryLock, describe
from base.settings import Settings

TIMESTAMP = pa.timestamp("ms", tz="UTC")
_MICROS = pa.timestamp("us", tz="UTC")


def same_moment(moment: datetime, rows: int) -> pa.Array:
    """A TIMESTAMP column of one moment (when a batch was written), without converting it
    once per row."""
    return pa.repeat(pa.scalar(moment, type=TIMESTAMP), rows)


def timestamps(moments: Sequence[datetime | None]) -> pa.Array:
    """A TIMESTAMP column of many moments. Arrow reads datetimes at µs four times faster
    than at ms; the ms are then taken by floor division, as Arrow's own conversion does."""
    as_micros = pa.array(moments, type=_MICROS)
    if as_micros.null_count:
        return pa.array(moments, type=TIMESTAMP)
    millis = np.floor_divide(as_micros.cast(pa.int64()).to_numpy(), 1000)
    return pa.array(millis, type=pa.int64()).cast(TIMESTAMP)


AMOUNT = pa.decimal128(38, 9)


class StoreError(RuntimeError):
    """The store cannot be reached or answered with an error."""


class StoreInUseError(StoreError):
    """Another process owns the chDB directory (chDB allows one process per directory)."""


class Connection:
    def __init__(self, client: Any, database: str, locked: Path | None = None) -> None:
        self.client = client
        self.database = database
        self._locked = locked  # the chDB directory this connection holds the lock of

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Connection:
        """Connect (taking chDB's directory lock) and, unless told not to, apply the
        pending migrations, so that every command sees the schema its code expects."""
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
        connection = cls(client, settings.clickhouse_database, locked)
        if migrate:
            try:
                connection.migrate()
            except Exception:
                connection.close()
                raise
        return connection

    def close(self) -> None:
        self.client.close()
        if self._locked is not None:
            DirectoryLock.release(self._locked)
            self._locked = None

    def migrate(self) -> list[migrations.Migration]:
        return migrations.migrate(self.client, self.database)

    def table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def ping(self) -> None:
        self.client.command("SELECT 1")

    def table_sizes(self) -> dict[str, tuple[int, int]]:
        """table -> (rows, compressed bytes), from the active parts."""
        result = self.client.query(
            "SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts "
            "WHERE database = {database:String} AND active GROUP BY table",
            parameters={"database": self.database},
        )
        return {table: (int(rows), int(size)) for table, rows, size in result.result_rows}

    def count(self, table: str, tenant: str | None = None) -> int:
        """Rows of ``table`` (of one tenant), as the table's engine merges them (FINAL)."""
        named = {"tenant": tenant}
        query = f"SELECT count() FROM {self.table(table)} FINAL {where_equal(named)}"
        return int(self.client.command(query, parameters=named))

    def drop_database(self) -> None:
        self.client.command(f"DROP DATABASE IF EXISTS {self.database}")


class TableStore:
    """What every stage's store starts from: the connection a command opened, its client,
    and the database-qualified name of each table."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._client = connection.client
        self._table = connection.table


def as_utc(moment: datetime) -> datetime:
    """ClickHouse hands DateTime64 back without a zone; meterline's columns are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def where_equal(named: dict[str, str | None]) -> str:
    """A WHERE clause binding each named value that is given; "" when none is."""
    given = [f"{name} = {{{name}:String}}" for name, value in named.items() if value is not None]
    return f"WHERE {' AND '.join(given)}" if given else ""


def and_tenant(tenant: str | None) -> str:
    """A condition to add to a WHERE clause binding ``{tenant}``; "" for every tenant."""
    return "" if tenant is None else " AND tenant = {tenant:String}"


def nanos_to_decimal_array(nanos: np.ndarray) -> pa.Array:
    """int64 nano-units as exact decimal128(38, 9): the unscaled integer is the nano count."""
    nanos = np.ascontiguousarray(nanos, dtype=np.int64)
    words = np.empty(nanos.shape[0] * 2, dtype=np.int64)
    words[0::2] = nanos
    words[1::2] = nanos >> 63  # sign extension into the high 64 bits
    return pa.Array.from_buffers(AMOUNT, nanos.shape[0], [None, pa.py_buffer(words)])
