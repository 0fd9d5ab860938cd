"""The Faust worker: the stream loop that takes batches of records from Kafka through the
``Aggregator`` into the store, sends the batch's rejections to the dead-letter topic, and
keeps the gauges; the web pages are ``internal_web``'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.sensors.prometheus import FaustMetrics
from faust.types import TP
from prometheus_client import REGISTRY

from aggregation.aggregator import EXIT_STORE_UNAVAILABLE, Aggregator, tune_garbage_collector
from aggregation.alert_store import AlertStore
from aggregation.alerts import AlertRules, CreditOf
from aggregation.dead_letters import forward, is_forwarded_copy, publish_dead_letters
from aggregation.handlers import Handlers
from aggregation.internal_web import add_pages
from aggregation.marks import Marks, disk_generations
from aggregation.readers import PipelineReads
from aggregation.reconcile import unaccounted_events
from aggregation.sink import PipelineSink
from aggregation.transport import BatchingConsumer, BatchLimits, WorkerMonitor, WorkerTransport
from base import logs, metrics
from base.clickhouse import Connection, StoreInUseError
from base.kafka_admin import ensure_topic, partition_count
from base.processes import EXIT_STORE_IN_USE
from base.settings import Settings
from rating.plans import PriceBook
from subscriptions.directory import SubscriptionDirectory
from subscriptions.feed import follow
from subscriptions.store import SubscriptionStore

log = logging.getLogger("meterline.worker")

# Something a command above this stage reads from the store each minute, to set a gauge
# (invoice runs: short processes that Prometheus never sees).
Measure = Callable[[Connection], None]


def faust_settings(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    """Settings proven against the embedded broker and Apache Kafka alike (see DESIGN.md):
    at-least-once plus idempotent effects, short sessions so (re)joins take seconds."""
    return {
        "broker": f"kafka://{bootstrap_servers}",
        "processing_guarantee": "at_least_once",
        "store": "memory://",
        "consumer_auto_offset_reset": "earliest",
        "table_standby_replicas": 0,
        "web_enabled": settings.worker_web_port > 0,
        "web_bind": settings.worker_web_host,
        "web_port": settings.worker_web_port or 6066,
        "web_host": settings.worker_web_host,
        "topic_disable_leader": True,
        "topic_allow_declare": False,
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 6.0,
        "broker_commit_interval": 0.2,
        "datadir": str(settings.data_dir / "faust"),
    }


def create_app(
    settings: Settings,
    bootstrap_servers: str,
    connection: Connection,
    aggregator: Aggregator,
    book: PriceBook,
    *,
    measures: Sequence[Measure] = (),
    handlers: Handlers | None = None,
) -> faust.App:
    app = faust.App(settings.consumer_group, **faust_settings(settings, bootstrap_servers))
    app.transport = WorkerTransport(app.conf.broker_consumer, app)
    # Faust's own sensor adds what only it sees: rebalances, assignment and send latency,
    # records per partition (meterline_faust_*; records, not events: a record holds many).
    app.monitor = WorkerMonitor(metrics=FaustMetrics.create(REGISTRY, "meterline_faust"))
    topic = app.topic(
        settings.events_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.topic_partitions,
    )

    durable: dict[int, int] = {}  # partition -> next offset not yet durable

    async def send_dead_letter(value: bytes) -> Any:
        return await app.producer.send(settings.dead_letter_topic, None, value, None, None, None)

    consumer = cast(BatchingConsumer, app.consumer)

    async def aggregate(messages: list[Any]) -> None:
        """One batch from the consumer (``transport``): made durable, then committed."""
        try:
            for partition in await aggregator.prepare(bootstrap_servers):
                await consumer.rewind(TP(settings.events_topic, partition), 0)
            records = await aggregator.positions(bootstrap_servers, messages)
        except Exception:
            # As in handle: committing would acknowledge the batch unbilled.
            log.critical(
                "cannot tell which log the batch comes from (broker or store unavailable): "
                "exiting without acknowledging it", exc_info=True,
            )  # fmt: skip
            os._exit(EXIT_STORE_UNAVAILABLE)
        copies = {(record.partition, record.offset)
                  for record, message in zip(records, messages, strict=True)
                  if message.headers and is_forwarded_copy(message.headers)}  # fmt: skip
        result = aggregator.handle(records, aggregator.checkpoints_of(messages), copies)
        if result.rejected:
            await publish_dead_letters(send_dead_letter, settings.events_topic,
                                       result.rejected, EXIT_STORE_UNAVAILABLE)  # fmt: skip
            log.info(
                "dead-lettered %d of a batch's events", len(result.rejected),
                extra={"rejected": len(result.rejected),
                       "by_reason": dict(Counter(r.reason for r in result.rejected))},
            )  # fmt: skip
        if result.forwarded:
            await forward(app.producer, settings.events_topic, result.forwarded,
                          EXIT_STORE_UNAVAILABLE)  # fmt: skip
        queryable = time.time()
        following: dict[TP, int] = {}
        for message in messages:
            metrics.EVENT_AGE_SECONDS.observe(queryable - message.timestamp)
            following[message.tp] = message.offset + 1
        await consumer.commit_durable(following)
        durable.update((tp.partition, offset) for tp, offset in following.items())

    # The topic is subscribed to, and its batches go to ``aggregate`` (see ``transport``).
    app.topics.add(topic)
    consumer.batch_handler = aggregate
    consumer.batch_limits = BatchLimits(
        settings.batch_max_records, settings.batch_max_bytes, settings.batch_within_seconds
    )

    async def on_assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        (assigned,) = args
        mine = {tp.partition for tp in assigned if tp.topic == settings.events_topic}
        if mine:
            aggregator.assigned(mine)

    # mode types receivers as a union of callables that mypy cannot match a coroutine against.
    app.on_partitions_assigned.connect(cast(Any, on_assigned))

    async def measure_lag() -> None:
        """Per partition: the highwater mark the broker gave on the last fetch, minus the
        next offset to make durable."""
        for tp in app.consumer.assignment():
            behind = _lag(app, settings.events_topic, tp.partition, durable)
            if tp.topic == settings.events_topic and behind is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(behind)

    pipeline = PipelineReads(connection)

    async def measure_tables() -> None:
        # The reconciliation identity over the last hour's records: a record whose events
        # are not all accounted for, or one that left no row at all, shows here.
        since = datetime.now(UTC) - timedelta(hours=1)
        metrics.UNACCOUNTED_EVENTS.set(unaccounted_events(pipeline, since))
        for table, (rows, size) in connection.table_sizes().items():
            metrics.STORE_TABLE_ROWS.labels(table).set(rows)
            metrics.STORE_TABLE_BYTES.labels(table).set(size)
        for measure in measures:
            measure(connection)

    async def follow_subscriptions() -> None:
        await follow(
            bootstrap_servers, settings.subscriptions_topic, aggregator.subscriptions.absorb
        )

    # mode's timer and task decorators are untyped.
    cast(Any, app.timer)(interval=5.0)(measure_lag)
    cast(Any, app.timer)(interval=60.0)(measure_tables)
    cast(Any, app.task)(follow_subscriptions)

    def health() -> tuple[bool, dict[str, Any]]:
        assigned = sorted(tp.partition for tp in app.consumer.assignment()
                          if tp.topic == settings.events_topic)  # fmt: skip
        lag = {str(p): _lag(app, settings.events_topic, p, durable) for p in assigned}
        return bool(assigned), {"partitions": assigned, "lag": lag}

    async def judge_caps() -> None:
        # A plan change (an upgrade) or a new period lifts a cap without a new event.
        aggregator.balances.refresh()

    cast(Any, app.timer)(interval=0.5)(judge_caps)

    add_pages(app, settings, bootstrap_servers, connection=connection,
              directory=aggregator.subscriptions, book=book, health=health,
              handlers=handlers, balances=aggregator.balances)  # fmt: skip
    return app


def _lag(app: faust.App, topic: str, partition: int, durable: dict[int, int]) -> int | None:
    """The highwater mark the broker gave on the last fetch minus the next offset to make
    durable; None before the first fetch."""
    highwater = app.consumer.highwater(TP(topic, partition))
    return None if highwater is None else max(0, highwater - durable.get(partition, 0))


def run_worker(
    settings: Settings,
    bootstrap_servers: str,
    book: PriceBook,
    measures: Sequence[Measure] = (),
    handlers: Handlers | None = None,
    *,
    credits: Callable[[Connection], CreditOf] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; Faust handles the signals and a graceful stop.
    ``measures`` are what the commands above this stage add to the minute's gauges;
    ``handlers``, what the commands hand down for the gateway (``aggregation.handlers``);
    ``credits``, how to read prepaid credit balances (invoicing's), for their alerts."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tune_garbage_collector()
    for name in (settings.events_topic, settings.dead_letter_topic):
        asyncio.run(ensure_topic(bootstrap_servers, name, settings.topic_partitions))
    partitions = asyncio.run(partition_count(bootstrap_servers, settings.events_topic))
    if partitions != settings.topic_partitions:
        log.warning(
            "%s has %d partitions, not the configured %d: using %d",
            settings.events_topic, partitions, settings.topic_partitions, partitions,
        )  # fmt: skip
    try:
        connection = Connection.open(settings)
    except StoreInUseError as error:
        log.critical("%s", error)
        raise SystemExit(EXIT_STORE_IN_USE) from None
    window = settings.event_window()
    dedupe_window = timedelta(hours=settings.dedupe_window_hours)
    directory = SubscriptionDirectory(SubscriptionStore(connection).terms_written_since)
    marks = (
        Marks(disk_generations(settings.data_dir / "dedupe-marks"))
        if settings.dedupe_marks == "disk"
        else Marks()
    )
    aggregator = Aggregator(
        PipelineSink(connection), directory, book, window=window, partitions=partitions,
        dedupe_window=dedupe_window, topic=settings.events_topic, marks=marks,
        alerts=AlertRules(AlertStore(connection).rules_written_since),
        credit_of=credits(connection) if credits is not None else None,
    )  # fmt: skip
    app = create_app(settings, bootstrap_servers, connection, aggregator, book,
                     measures=measures, handlers=handlers)  # fmt: skip
    worker = faust.Worker(
        app, loglevel="WARN", quiet=True, redirect_stdouts=False,
        logging_config=logs.logging_config(),
    )  # fmt: skip
    worker.execute_from_commandline()
