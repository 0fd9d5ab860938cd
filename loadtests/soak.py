"""Soak: a steady load for minutes, watched as an SRE would, then checked to the unit.

    python -m loadtests.soak --minutes N [--rate EVENTS_PER_S] [--subscriptions N]

On the embedded broker and chDB, a worker process takes usage sent at a fixed rate
(``loadtests.workload``: Zipf over the subscriptions, 5% re-sent within seconds, 2% stamped
hours late, bursts, 0.1% unbillable). Every report interval (a
minute by default) it prints the throughput the worker made durable, the lag, the p99
event age (both from the worker's /metrics) and the RSS of each process. At the end it
waits for the worker to catch up and checks that the totals in ClickHouse equal the
generator's own count of the distinct billable usage of every summed meter, and reports
the slope of the worker's memory over the run (flat is what it should be; the dedupe
window is longer than any soak, so marks grow with distinct events, ~123 bytes each).

The last line is one JSON object with the figures; the exit code is 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aggregation.readers import PipelineReads
from base.clickhouse import Connection
from base.events import UsageEvent
from base.kafka_admin import ensure_topic
from base.settings import Settings
from ingest.producer import Publisher
from loadtests.workload import Shape, generate
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import WorkerProcess
from rating.loading import load_price_book

TICK_SECONDS = 0.1


def rss_megabytes(pid: int | None) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def scrape(url: str) -> dict[str, Any]:
    """Durable events so far, lag, and the event-age histogram's cumulative buckets."""
    figures: dict[str, Any] = {"consumed": 0.0, "lag": 0.0, "age_buckets": {}}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == "meterline_events_consumed_total":
                figures["consumed"] = sample.value
            elif sample.name == "meterline_consumer_lag_records":
                figures["lag"] += sample.value
            elif sample.name == "meterline_event_age_seconds_bucket":
                figures["age_buckets"][float(sample.labels["le"])] = sample.value
    return figures


def p99_between(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The p99 of the observations made between two scrapes (an upper bucket bound)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return None
    return next(bound for bound, count in counts.items() if count >= 0.99 * total)


def slope(values: list[float]) -> float:
    """Least-squares slope per step; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return statistics.linear_regression(range(len(values)), values).slope


@dataclass(frozen=True)
class Report:
    minute: float
    events_per_s: float
    lag_records: float
    event_age_p99_s: float | None
    rss_mb: dict[str, float]


class Watch:
    """Scrapes the worker's metrics and the processes' memory every ``interval`` seconds."""

    def __init__(self, url: str, interval: float, pids: dict[str, int | None]) -> None:
        self.url, self.interval, self.pids = url, interval, pids
        self.rows: list[Report] = []
        self._began = self._at = time.monotonic()
        self._last: dict[str, Any] = {"consumed": 0.0, "age_buckets": {}}

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._at < self.interval:
            return
        try:
            figures = scrape(self.url)
        except httpx.HTTPError:
            return  # the worker's web server is not up yet
        row = Report(
            minute=(now - self._began) / 60,
            events_per_s=(figures["consumed"] - self._last["consumed"]) / (now - self._at),
            lag_records=figures["lag"],
            event_age_p99_s=p99_between(self._last["age_buckets"], figures["age_buckets"]),
            rss_mb={name: rss_megabytes(pid) for name, pid in self.pids.items()},
        )
        self.rows.append(row)
        self._at, self._last = now, figures
        memory = ", ".join(f"{name} {mb:,.0f} MB" for name, mb in row.rss_mb.items())
        print(
            f"t={row.minute:6.2f} min  {row.events_per_s:9,.0f} events/s durable  lag "
            f"{row.lag_records:7,.0f}  event age p99 <= {row.event_age_p99_s} s  RSS {memory}",
            file=sys.stderr, flush=True,
        )  # fmt: skip


async def send_steadily(
    publisher: Publisher, events: Iterator[UsageEvent], rate: float, report: Any
) -> dict[int, int]:
    """Send every event at ``rate`` events/s, calling ``report()`` as it goes."""
    offsets: dict[int, int] = {}
    per_tick = max(1, round(rate * TICK_SECONDS))
    while True:
        tick = time.monotonic()
        chunk = [event for _, event in zip(range(per_tick), events, strict=False)]
        if not chunk:
            break
        for partition, offset in (await publisher.send(chunk)).items():
            offsets[partition] = max(offset, offsets.get(partition, -1))
        report()
        await asyncio.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - tick)))
    return offsets


def billable_sums(good: list[UsageEvent], summed: set[str]) -> dict[tuple[str, str], int]:
    """The generator's own count: the quantities of the distinct billable events, per
    subscription and summed meter."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for event in generator.distinct(good):
        if event.meter in summed:
            totals[(event.subscription, event.meter)] += event.quantity
    return dict(totals)


def run(minutes: float, rate: float, subscription_count: int, report_seconds: float, *,
        seed: int, dedupe_window_hours: float = 24.0) -> dict[str, Any]:  # fmt: skip
    book = load_price_book(PRICE_BOOK)
    period = datetime.now(UTC).date().replace(day=1)
    subs = generator.subscriptions(subscription_count, list(book.versions), seed, period)
    count = int(rate * minutes * 60)
    # Retries come soon after the original (within ~10 s of sending), so inside any dedupe
    # window the soak is run with, and each counts once.
    shape = Shape(late_resend_share=0.0, retry_horizon=max(1, int(rate * 10)))
    start, end = generator.usage_span(period)
    load = generate(subs, count, start, end, shape=shape, seed=seed)
    sent, good = load.sent, load.billable
    summed = {meter.id for meter in book.meters if meter.aggregation == "sum"}
    with (
        tempfile.TemporaryDirectory(prefix="meterline-soak-") as folder,
        EmbeddedBroker(log_path=Path(folder) / "broker.log") as broker,
    ):
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap_servers, data_dir=Path(folder),
            events_topic=f"soak.events.{run_id}", consumer_group=f"soak-{run_id}",
            worker_web_port=free_port(), kafka_idempotence=False,
            max_event_age_days=62,  # the generator spreads usage over the whole month
            dedupe_window_hours=dedupe_window_hours,
        )  # fmt: skip
        bootstrap = broker.bootstrap_servers
        asyncio.run(ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions))
        prepare_store(settings, subs)
        worker = WorkerProcess(settings, bootstrap, Path(folder) / "worker.log")
        worker.start()
        pids = {"worker": worker.pid, "broker": broker.pid, "driver": os.getpid()}
        url = f"http://127.0.0.1:{settings.worker_web_port}/metrics"
        watch = Watch(url, report_seconds, pids)

        async def drive() -> dict[int, int]:
            async with Publisher(bootstrap, settings.events_topic) as publisher:
                return await send_steadily(publisher, iter(sent), rate, watch.report)

        try:
            offsets = asyncio.run(drive())
            asyncio.run(wait_until_consumed(settings, bootstrap, offsets, worker.exit_code,
                                            lambda _: None))  # fmt: skip
            watch.report(final=True)
        finally:
            worker.stop()
        connection = Connection.open(settings)
        try:
            stored: dict[tuple[str, str], int] = defaultdict(int)
            for row in PipelineReads(connection).rated_totals(period):
                if row.meter in summed:
                    stored[(row.subscription, row.meter)] += row.quantity
        finally:
            connection.close()
    expected = billable_sums(good, summed)
    rows = watch.rows
    worker_rss = [r.rss_mb["worker"] for r in rows]
    ages = [r.event_age_p99_s for r in rows if r.event_age_p99_s is not None]
    return {
        "minutes": minutes,
        "rate": rate,
        "sent": len(sent),
        "distinct": len(generator.distinct(sent)),
        "reports": len(rows),
        "mean_events_per_s": round(statistics.fmean(r.events_per_s for r in rows), 1),
        "max_lag_records": max((r.lag_records for r in rows), default=0),
        "max_event_age_p99_s": max(ages, default=None),
        "worker_rss_first_mb": round(worker_rss[0], 1) if worker_rss else None,
        "worker_rss_last_mb": round(worker_rss[-1], 1) if worker_rss else None,
        "dedupe_window_minutes": dedupe_window_hours * 60,
        # Over the second half: the first reports include start-up and Numba compiling.
        "worker_rss_slope_mb_per_min": round(
            slope(worker_rss[len(worker_rss) // 2 :]) * 60 / report_seconds, 3
        ),
        "totals_checked": len(expected),
        "totals_match": dict(stored) == expected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5_000, help="events/s sent")
    parser.add_argument("--subscriptions", type=int, default=20_000)
    parser.add_argument("--report-seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--dedupe-window-minutes", type=float, default=24 * 60,
        help="shorter than the run, it shows the worker's memory levelling off as marks expire",
    )  # fmt: skip
    args = parser.parse_args()
    figures = run(args.minutes, args.rate, args.subscriptions, args.report_seconds,
                  seed=args.seed, dedupe_window_hours=args.dedupe_window_minutes / 60)  # fmt: skip
    print(json.dumps(figures))
    sys.exit(0 if figures["totals_match"] else 1)


if __name__ == "__main__":
    main()
