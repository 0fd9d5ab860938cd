"""End-to-end pipeline throughput and latency, against a ceiling measured in the same run,
on the embedded broker and chDB (everything on this machine, broker included).

    python -m loadtests.bench_pipeline [--events N] [--subscriptions N] [--latency-seconds S]
                                       [--workers N] [--record-events N]

(b) meterline: a Faust worker process, from the topic to rated totals queryable in
    ClickHouse (the group's committed offsets: the worker commits only what is durable),
    in events/s, while the topic is filled as fast as the producer can; and the worker's
    own CPU time per event over (b), every thread of the process counted: the stable
    figure, where events/s swings with whatever else the shared cores run. Records hold
    --record-events events each (500, as meterline's producers batch; 1, as any other
    Kafka client sends by default).
(c) latency: events produced at a steady share of (b) (half by default); the time from a
    record's send to the commit that covers it, p50 and p99 over events. The producer
    runs on the same cores as the broker and the worker.
(d) drain: the worker stopped, as many new events produced into the topic, the worker
    started again; from its first commit to its last, events/s and worker CPU per event:
    how fast one worker empties a backlog, without the producer on the same cores.
(a) ceiling: one aiokafka consumer reading every record of the same topic and decoding
    its events, with no other work, in events/s.

The last line is one JSON object with the figures and the ratio b/a.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from base.events import UsageEvent, decode_record
from base.kafka_admin import GroupProgress, ensure_topic
from base.settings import Settings
from ingest.producer import BATCH_EVENTS, produce, records
from loadtests.workload import generate
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker
from meterline.worker_process import WorkerProcess
from rating.loading import load_price_book
from subscriptions.model import Subscription

TICK_SECONDS = 0.05
SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class Figures:
    raw_consume_events_per_s: float
    pipeline_events_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    events: int
    latency_events: int
    latency_rate: float
    workers: int
    worker_cpu_seconds: float
    subscriptions: int
    record_events: int
    drain_events_per_s: float
    drain_worker_cpu_seconds_per_event: float

    def as_dict(self) -> dict[str, float]:
        return {
            "raw_consume_events_per_s": round(self.raw_consume_events_per_s),
            "pipeline_events_per_s": round(self.pipeline_events_per_s),
            "worker_cpu_us_per_event": round(self.worker_cpu_seconds / self.events * 1e6, 2),
            "drain_events_per_s": round(self.drain_events_per_s),
            "drain_worker_cpu_us_per_event": round(
                self.drain_worker_cpu_seconds_per_event * 1e6, 2
            ),
            "drain_vs_raw": round(self.drain_events_per_s / self.raw_consume_events_per_s, 3),
            "pipeline_vs_raw": round(self.pipeline_events_per_s / self.raw_consume_events_per_s, 3),
            "latency_p50_s": round(self.latency_p50_s, 3),
            "latency_p99_s": round(self.latency_p99_s, 3),
            "events": self.events,
            "latency_events": self.latency_events,
            "latency_events_per_s": round(self.latency_rate),
            "workers": self.workers,
            "subscriptions": self.subscriptions,
            "record_events": self.record_events,
        }


def bench_settings(data_dir: Path, bootstrap: str) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        data_dir=data_dir,
        clickhouse_database="meterline_bench",
        events_topic=f"bench.events.{run}",
        consumer_group=f"bench-{run}",
    )


def workload(subs: list[Subscription], count: int, seed: int) -> Iterator[UsageEvent]:
    """This month's usage so far, shaped as ``loadtests.workload`` describes; ids unique
    per seed."""
    start, end = generator.usage_span(datetime.now(UTC).date().replace(day=1))
    return iter(generate(subs, count, start, end, seed=seed).sent)


async def steady_latency(
    settings: Settings,
    bootstrap: str,
    events: Iterator[UsageEvent],
    rate: float,
    seconds: float,
    *,
    record_events: int,
) -> tuple[list[float], int]:
    """Send ``rate`` events/s for ``seconds``; return each event's produce-to-committed
    time (one entry per event) and the number of events sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    sent_at: dict[tuple[int, int], tuple[float, int]] = {}
    latencies: list[float] = []
    partitions = list(range(settings.topic_partitions))
    sent = 0
    try:
        async with GroupProgress(bootstrap, settings.consumer_group, settings.events_topic) as g:
            began = time.monotonic()
            per_tick = max(1, round(rate * TICK_SECONDS))
            while time.monotonic() - began < seconds:
                tick = time.monotonic()
                chunk = [next(events) for _ in range(per_tick)]
                batch = list(records(chunk, len(partitions), record_events))
                pending = [
                    await producer.send(settings.events_topic, value, partition=partition)
                    for partition, value, _ in batch
                ]
                for metadata, (_, _, count) in zip(
                    await asyncio.gather(*pending), batch, strict=True
                ):
                    sent_at[(metadata.partition, metadata.offset)] = (tick, count)
                    sent += count
                await _collect(g, partitions, sent_at, latencies)
                await asyncio.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - tick)))
            deadline = time.monotonic() + 60
            while sent_at and time.monotonic() < deadline:
                await _collect(g, partitions, sent_at, latencies)
                await asyncio.sleep(0.02)
    finally:
        await producer.stop()
    return latencies, sent


async def _collect(
    group: GroupProgress,
    partitions: list[int],
    sent_at: dict[tuple[int, int], tuple[float, int]],
    latencies: list[float],
) -> None:
    committed = await group.committed(partitions)
    now = time.monotonic()
    for position in [p for p in sent_at if p[1] < committed[p[0]]]:
        sent_time, count = sent_at.pop(position)
        latencies.extend([now - sent_time] * count)


async def raw_consume(bootstrap: str, topic: str, partitions: int, records_total: int) -> float:
    """Events/s for one consumer that fetches and decodes every record, and nothing else."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        began, seen, events = time.monotonic(), 0, 0
        while seen < records_total:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for batch in batches.values():
                seen += len(batch)
                events += sum(len(decode_record(message.value)) for message in batch)
        return events / (time.monotonic() - began)
    finally:
        await consumer.stop()


def run(args: argparse.Namespace) -> Figures:
    book = load_price_book(PRICE_BOOK)
    subs = generator.subscriptions(
        args.subscriptions, list(book.versions), args.seed, date.today().replace(day=1)
    )
    main_events = list(workload(subs, args.events, args.seed))
    with tempfile.TemporaryDirectory(prefix="meterline-bench-") as folder:
        data_dir = Path(folder)
        with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
            bootstrap = broker.bootstrap_servers
            settings = bench_settings(data_dir, bootstrap)
            asyncio.run(ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions))
            workers = start_workers(settings, bootstrap, subs, args.workers, data_dir)
            try:
                print(f"starting {args.workers} worker(s) (a warm-up event per partition)…",
                      flush=True)  # fmt: skip
                warm_up = list(workload(subs, 50 * settings.topic_partitions, args.seed + 1))
                warm = asyncio.run(produce(bootstrap, settings.events_topic, warm_up))
                _wait(settings, bootstrap, warm, workers)
                if args.workers > 1:
                    time.sleep(SETTLE_SECONDS)  # let the group settle its assignment

                print(f"(b) {args.events:,} events through the pipeline…", flush=True)
                cpu_before = sum(worker.cpu_seconds() for worker in workers)
                began = time.monotonic()
                offsets = asyncio.run(
                    produce(bootstrap, settings.events_topic, main_events,
                            batch_events=args.record_events)
                )  # fmt: skip
                _wait(settings, bootstrap, offsets, workers)
                pipeline = args.events / (time.monotonic() - began)
                worker_cpu = sum(worker.cpu_seconds() for worker in workers) - cpu_before

                rate = pipeline * args.rate_share
                print(f"(c) latency at {rate:,.0f} events/s for {args.latency_seconds} s…")
                budget = int(rate * args.latency_seconds * 1.5) + 1_000
                steady = workload(subs, budget, args.seed + 2)
                latencies, latency_events = asyncio.run(
                    steady_latency(
                        settings,
                        bootstrap,
                        steady,
                        rate,
                        args.latency_seconds,
                        record_events=args.record_events,
                    )
                )
                print(f"(d) drain of {args.events:,} new events by restarted workers…",
                      flush=True)  # fmt: skip
                backlog = workload(subs, args.events, args.seed + 3)
                drained, drain_cpu = drain(settings, bootstrap, workers, backlog, args)
            finally:
                for worker in workers:
                    worker.stop()
            print("(a) one raw consumer over the same topic…", flush=True)
            records_total = asyncio.run(_records_in_topic(settings, bootstrap))
            raw = asyncio.run(
                raw_consume(bootstrap, settings.events_topic, settings.topic_partitions,
                            records_total)
            )  # fmt: skip
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Figures(raw, pipeline, quantiles[49], quantiles[98], args.events, latency_events, rate,
                   args.workers, worker_cpu, args.subscriptions, args.record_events, drained,
                   drain_cpu)  # fmt: skip


def drain(
    settings: Settings,
    bootstrap: str,
    workers: list[WorkerProcess],
    events: Iterator[UsageEvent],
    args: argparse.Namespace,
) -> tuple[float, float]:
    """(events/s, worker CPU seconds per event) from the restarted workers' first commit
    to their last, over a backlog produced while they were stopped. Starting (joining the
    group, restoring state, loading the kernels) comes before the first commit."""
    for worker in workers:
        worker.stop()
    before = asyncio.run(_records_in_topic(settings, bootstrap))
    offsets = asyncio.run(
        produce(bootstrap, settings.events_topic, events, batch_events=args.record_events)
    )
    records = sum(offset + 1 for offset in offsets.values()) - before
    for worker in workers:
        worker.start()
    first: list[tuple[float, float, int]] = []

    def progress(done: int) -> None:
        if not first and done > before:
            first.append((time.monotonic(), sum(w.cpu_seconds() for w in workers), done))

    _wait(settings, bootstrap, offsets, workers, progress)
    ended, cpu = time.monotonic(), sum(w.cpu_seconds() for w in workers)
    began, cpu_began, done_first = first[0]
    drained_events = (before + records - done_first) * args.events / records
    return (
        drained_events / max(ended - began, 1e-9),
        (cpu - cpu_began) / max(drained_events, 1.0),
    )


def start_workers(
    settings: Settings,
    bootstrap: str,
    subs: list[Subscription],
    count: int,
    data_dir: Path,
) -> list[WorkerProcess]:
    """``count`` workers in one consumer group. chDB lets one process own a data directory,
    so with several each gets its own: enough to measure how the work scales with
    workers, not a deployment (that shares one ClickHouse server, CLICKHOUSE_URL)."""
    workers = []
    for number in range(count):
        own = settings if count == 1 else settings.model_copy(
            update={"data_dir": data_dir / f"worker-{number}"}
        )  # fmt: skip
        prepare_store(own, subs)
        worker = WorkerProcess(own, bootstrap, data_dir / f"worker-{number}.log")
        worker.start()
        workers.append(worker)
    return workers


def _wait(
    settings: Settings,
    bootstrap: str,
    offsets: dict[int, int],
    workers: list[WorkerProcess],
    progress: Callable[[int], None] = lambda _: None,
) -> None:
    def stopped() -> int | None:
        return next((code for w in workers if (code := w.exit_code()) is not None), None)

    asyncio.run(wait_until_consumed(settings, bootstrap, offsets, stopped, progress))


async def _records_in_topic(settings: Settings, bootstrap: str) -> int:
    """Every record the worker committed: the whole topic, once it has caught up."""
    async with GroupProgress(bootstrap, settings.consumer_group, settings.events_topic) as g:
        return sum((await g.committed(list(range(settings.topic_partitions)))).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events for (b)")
    parser.add_argument("--subscriptions", type=int, default=1_000_000, help="Zipf over these")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="length of (c)")
    parser.add_argument(
        "--rate-share", type=float, default=0.5, help="(c)'s steady rate as a share of (b)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="workers in the group (each its own chDB)"
    )
    parser.add_argument(
        "--record-events", type=int, default=BATCH_EVENTS,
        help="events per Kafka record (1: one JSON object per record, as any client sends)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=7)
    figures = run(parser.parse_args())
    print(
        f"raw consume {figures.raw_consume_events_per_s:,.0f} events/s | meterline "
        f"{figures.pipeline_events_per_s:,.0f} events/s, "
        f"{figures.worker_cpu_seconds / figures.events * 1e6:.1f} µs of worker CPU per event; "
        f"drain {figures.drain_events_per_s:,.0f} events/s, "
        f"{figures.drain_worker_cpu_seconds_per_event * 1e6:.1f} µs per event "
        f"(x{figures.pipeline_events_per_s / figures.raw_consume_events_per_s:.2f} of raw) | "
        f"latency at {figures.latency_rate:,.0f} events/s: p50 {figures.latency_p50_s:.2f} s, "
        f"p99 {figures.latency_p99_s:.2f} s"
    )
    print(json.dumps(figures.as_dict()))


if __name__ == "__main__":
    main()
