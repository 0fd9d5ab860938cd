"""The store at scale: writing rated totals, reading one subscription's current usage with a
million subscriptions in the table, and closing a tenant's period into invoices.

    python -m loadtests.bench_store [--subscriptions 1000000] [--queries 1000]

Baselines measured in the same run, on the same engine (embedded chDB unless CLICKHOUSE_URL
is set): the engine generating the same rows itself (INSERT ... SELECT FROM numbers(), no
client at all) for writes, and a `SELECT 1` round trip through the same client for reads.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from aggregation.model import BatchResult, RatedRows, RatedTotal
from aggregation.readers import PipelineReads
from aggregation.sink import PipelineSink
from aggregation.usage import read_usage
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.closing import close_period
from invoicing.sources import Sources
from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book
from subscriptions.model import Subscription
from subscriptions.store import SubscriptionStore

PERIOD = date(2026, 10, 1)
START = datetime(2026, 1, 1, tzinfo=UTC)
METERS = ("api_calls", "tokens", "seats", "active_users")
CHUNK = 200_000
CLOSE_TENANT = "close-bench"


def totals(first: int, count: int, tenant: str = "bench") -> list[RatedTotal]:
    """Four totals per subscription (one per demo meter), on the growth plan."""
    return [
        RatedTotal(
            tenant,
            f"sub-{n:07d}",
            meter,
            "",
            PERIOD,
            "growth",
            2,
            "USD",
            1000 + n % 977,
            123_456_789 + n,
            n % 8,
            n,
            0,
            0,
        )
        for n in range(first, first + count)
        for meter in METERS
    ]


def write_rated(store: PipelineSink, subscriptions: int) -> float:
    """Seconds spent in ``PipelineSink.write_batch`` (Arrow conversion and insert), the totals
    built beforehand as the worker has them."""
    per_chunk = CHUNK // len(METERS)
    seconds = 0.0
    for first in range(0, subscriptions, per_chunk):
        batch = BatchResult(
            rated=RatedRows.of(totals(first, min(per_chunk, subscriptions - first)))
        )
        began = time.perf_counter()
        store.write_batch(batch)
        seconds += time.perf_counter() - began
    return seconds


def raw_insert(store: Connection, rows: int) -> float:
    """The engine's own ceiling: the same number of rows, generated inside ClickHouse."""
    store.client.command(f"CREATE TABLE {store.table('raw_rated')} AS {store.table('rated_usage')}")
    began = time.perf_counter()
    store.client.command(
        f"INSERT INTO {store.table('raw_rated')} (tenant, subscription, meter, group_key, "
        "period_start, plan, plan_version, currency, quantity, value_at, amount, "
        "kafka_partition, kafka_offset, event_index, updated_at) "
        "SELECT 'raw', concat('sub-', leftPad(toString(intDiv(number, 4)), 7, '0')), "
        "['api_calls', 'tokens', 'seats', 'active_users'][number % 4 + 1], '', "
        "toDate('2026-10-01'), 'growth', 2, 'USD', 1000 + number % 977, 0, "
        "toDecimal128(number, 9), number % 8, number, 0, now64(3) "
        f"FROM numbers({rows})"
    )
    return time.perf_counter() - began


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(np.array(values), share * 100))


def timed(work: Callable[[], object], times: int) -> list[float]:
    laps = []
    for _ in range(times):
        began = time.perf_counter()
        work()
        laps.append(time.perf_counter() - began)
    return laps


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--close-subscriptions", type=int, default=10_000)
    args = parser.parse_args()
    book = load_price_book(PRICE_BOOK)
    with tempfile.TemporaryDirectory(prefix="meterline-bench-store-") as folder:
        settings = Settings(
            data_dir=Path(folder), clickhouse_database=f"bench_{uuid.uuid4().hex[:8]}"
        )
        store = Connection.open(settings)
        sink, reads = PipelineSink(store), PipelineReads(store)
        try:
            rows = args.subscriptions * len(METERS)
            write_seconds = write_rated(sink, args.subscriptions)
            raw_seconds = raw_insert(store, rows)
            store.client.command(f"OPTIMIZE TABLE {store.table('rated_usage')} FINAL")

            rng = random.Random(7)
            picks = [f"sub-{rng.randrange(args.subscriptions):07d}" for _ in range(args.queries)]
            answers = iter(picks)

            def one_usage() -> None:
                found = read_usage(reads, book, "bench", next(answers), PERIOD)
                assert len(found.lines) == len(METERS)

            read_usage(reads, book, "bench", picks[0], PERIOD)  # warm the caches
            usage_laps = timed(one_usage, args.queries)
            ping_laps = timed(store.ping, args.queries)

            subs = args.close_subscriptions
            SubscriptionStore(store).write(
                [Subscription(CLOSE_TENANT, f"sub-{n:07d}", f"c{n}", "growth", START, version=1)
                 for n in range(subs)]
            )  # fmt: skip
            sink.write_batch(BatchResult(rated=RatedRows.of(totals(0, subs, CLOSE_TENANT))))
            began = time.perf_counter()
            closed = close_period(Sources.over(store), book, PERIOD, tenant=CLOSE_TENANT)
            close_seconds = time.perf_counter() - began
            assert closed.created == subs
        finally:
            store.drop_database()
            store.close()
    figures = {
        "subscriptions": args.subscriptions,
        "rated_rows": rows,
        "write_rows_per_second": round(rows / write_seconds),
        "raw_insert_rows_per_second": round(rows / raw_seconds),
        "write_vs_raw_insert": round(raw_seconds / write_seconds, 3),
        "usage_query_p50_ms": round(percentile(usage_laps, 0.5) * 1000, 2),
        "usage_query_p99_ms": round(percentile(usage_laps, 0.99) * 1000, 2),
        "select_1_p50_ms": round(statistics.median(ping_laps) * 1000, 2),
        "usage_query_vs_select_1": round(
            statistics.median(usage_laps) / statistics.median(ping_laps), 1
        ),
        "close_invoices_per_second": round(subs / close_seconds),
    }
    print(
        f"{rows:,} rated totals of {args.subscriptions:,} subscriptions written at "
        f"{figures['write_rows_per_second']:,} rows/s ({figures['write_vs_raw_insert']}× the "
        f"engine's own insert); one subscription's usage p50 {figures['usage_query_p50_ms']} ms, "
        f"p99 {figures['usage_query_p99_ms']} ms (SELECT 1: {figures['select_1_p50_ms']} ms); "
        f"close: {figures['close_invoices_per_second']:,} invoices/s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
