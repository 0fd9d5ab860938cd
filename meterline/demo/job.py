"""The demo job behind ``meterline run``: produce a month of usage, aggregate and rate it in
a Faust worker, and read the period's invoice summary back from ClickHouse.

It resets its own database and uses a fresh topic and consumer group per run,
so it never touches production data even when pointed at a real cluster.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from aggregation.readers import PipelineReads
from base.clickhouse import Connection
from base.events import UsageEvent
from base.kafka_admin import GroupProgress, ensure_topic
from base.settings import Settings
from ingest.producer import produce
from invoicing.closing import CloseReport, close_period
from invoicing.invoice import Invoice
from invoicing.sources import Sources
from meterline.demo import generator
from meterline.embedded_broker import kafka
from meterline.worker_process import WorkerProcess
from rating.plans import PriceBook
from subscriptions.model import Subscription
from subscriptions.store import SubscriptionStore

DEMO_DATABASE = "meterline_demo"
STALL_SECONDS = 120.0


class DemoError(RuntimeError):
    """The demo could not complete; the message says what failed and where to look."""


@dataclass(frozen=True)
class DemoOptions:
    subscriptions: int
    events: int
    duplicate_share: float
    period: date
    seed: int
    bad_share: float = 0.0


@dataclass(frozen=True)
class DemoOutcome:
    invoices: list[Invoice]  # the period's drafts, as `meterline invoices close` writes them
    closed: CloseReport
    sent: int
    distinct: int
    stored_events: int
    rejected: int
    rejected_by_reason: dict[str, int]
    dead_letter_topic: str
    produce_seconds: float
    process_seconds: float


class Progress:
    """What the job reports while it runs; the CLI draws it, tests ignore it."""

    def stage(self, description: str, total: int | None = None) -> None: ...

    def advance(self, done: int) -> None: ...


def demo_settings(settings: Settings, period: date) -> Settings:
    """The demo's own database, topic and group; and since it replays a past period, an
    event age limit that reaches back to the period's first day."""
    run_id = uuid.uuid4().hex[:8]
    reach_back = (datetime.now(UTC).date() - period).days + 1
    return settings.model_copy(
        update={
            "clickhouse_database": DEMO_DATABASE,
            "events_topic": f"{settings.events_topic}.demo-{run_id}",
            "consumer_group": f"{settings.consumer_group}-demo-{run_id}",
            "max_event_age_days": max(settings.max_event_age_days, reach_back),
        }
    )


def prepare_store(settings: Settings, subs: list[Subscription]) -> None:
    """A fresh database holding ``subs`` and a customer for each."""
    connection = Connection.open(settings, migrate=False)
    try:
        connection.drop_database()
        connection.migrate()
        store = SubscriptionStore(connection)
        store.write(subs)
        store.write_customers(generator.customers(subs), version=1)
    finally:
        connection.close()


def run_demo(
    settings: Settings, book: PriceBook, options: DemoOptions, progress: Progress
) -> DemoOutcome:
    settings = demo_settings(settings, options.period)
    progress.stage("Preparing the store")
    subs = generator.subscriptions(
        options.subscriptions, list(book.versions), options.seed, options.period
    )
    prepare_store(settings, subs)
    good = list(
        generator.events(
            subs, options.events, options.period, options.duplicate_share, options.seed
        )
    )
    bad = generator.bad_events(
        subs, round(options.events * options.bad_share), options.period, options.seed
    )
    sent = generator.interleave(good, bad, options.seed)
    with kafka(settings) as bootstrap:
        asyncio.run(ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions))
        worker = WorkerProcess(settings, bootstrap, settings.data_dir / "worker.log")
        worker.start()
        try:
            produce_seconds, process_seconds = asyncio.run(
                _drive(settings, bootstrap, sent, worker, progress)
            )
        finally:
            exit_code = worker.stop()
        if exit_code not in (0, None):
            raise DemoError(f"the worker exited with code {exit_code}:\n{worker.log_tail()}")
    progress.stage(f"Closing {options.period:%Y-%m} into draft invoices")
    connection = Connection.open(settings)
    try:
        sources = Sources.over(connection)
        closed = close_period(sources, book, options.period)
        invoices = sources.ledger.invoices([options.period])
        stored, rejected = connection.count("events"), connection.count("rejected_events")
        by_reason = PipelineReads(connection).rejections_by_reason()
    finally:
        connection.close()
    return DemoOutcome(
        invoices=invoices,
        closed=closed,
        sent=len(sent),
        distinct=len(generator.distinct(good)),
        stored_events=stored,
        rejected=rejected,
        rejected_by_reason=by_reason,
        dead_letter_topic=settings.dead_letter_topic,
        produce_seconds=produce_seconds,
        process_seconds=process_seconds,
    )


async def _drive(
    settings: Settings,
    bootstrap: str,
    sent: list[UsageEvent],
    worker: WorkerProcess,
    progress: Progress,
) -> tuple[float, float]:
    began = time.monotonic()
    progress.stage(f"Producing {len(sent):,} events to {settings.events_topic}", len(sent))
    last_offsets = await produce(bootstrap, settings.events_topic, sent, progress.advance)
    produced_at = time.monotonic()
    records = sum(offset + 1 for offset in last_offsets.values())  # the topic is this run's own
    progress.stage(
        f"Deduplicating, aggregating and rating in the Faust worker ({records:,} records)", records
    )
    await wait_until_consumed(settings, bootstrap, last_offsets, worker.exit_code, progress.advance)
    return produced_at - began, time.monotonic() - produced_at


async def wait_until_consumed(
    settings: Settings,
    bootstrap: str,
    last_offsets: dict[int, int],
    worker_exit_code: Callable[[], int | None],
    on_progress: Callable[[int], None],
) -> None:
    """Wait until the group has committed past every produced offset. The worker commits
    only what it made durable, so 'committed' means 'queryable in ClickHouse'."""
    partitions = sorted(last_offsets)
    async with GroupProgress(bootstrap, settings.consumer_group, settings.events_topic) as group:
        last_change, last_done = time.monotonic(), -1
        while True:
            committed = await group.committed(partitions)
            done = sum(min(committed[p], last_offsets[p] + 1) for p in partitions)
            on_progress(done)
            if all(committed[p] > last_offsets[p] for p in partitions):
                return
            if worker_exit_code() is not None:
                raise DemoError(f"the worker stopped early (exit code {worker_exit_code()})")
            if done != last_done:
                last_change, last_done = time.monotonic(), done
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise DemoError(f"no progress for {STALL_SECONDS:.0f} s; see the worker log")
            await asyncio.sleep(0.2)
