"""The Faust worker: batches of records from Kafka through ``BatchProcessor`` into the store.

Durability rule: ``take_events`` acknowledges a batch when the loop asks for
the next one, and Faust commits acknowledged offsets. So the store write runs
synchronously inside the loop body (no await, hence no cancellation point
between processing and writing), and a write that cannot be made durable ends
the process *before* the batch is acknowledged. Replays after any crash are
absorbed by the offset rule in ``aggregation.state``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import faust
import msgspec
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from faust.web import View
from prometheus_client import REGISTRY

from aggregation.batch import BatchProcessor, BatchResult, Record, Rejection
from aggregation.log_identity import Checkpoint, Judgement, fingerprint, ordinal, split
from aggregation.log_probe import probe
from aggregation.prompt_fetch import PromptFetchTransport, RewindingConsumer
from aggregation.state import UsageState
from aggregation.subscription_feed import announce, entries, follow
from aggregation.subscriptions import SubscriptionDirectory
from ingest.dead_letter import DeadLetter, encode_dead_letter
from ingest.registry_api import RegistryRequest, answer
from invoicing.reconcile import unaccounted_events
from invoicing.registry import version_of
from invoicing.store import Store, StoreInUseError
from invoicing.usage import read_usage
from meterline import logs, metrics
from meterline.events import EventWindow
from meterline.kafka_admin import ensure_topic, partition_count
from meterline.metrics import exposition
from meterline.processes import EXIT_STORE_IN_USE
from meterline.settings import Settings
from rating.period import Period
from rating.plans import PriceBook
from rating.table import ChargeTable

log = logging.getLogger("meterline.worker")

WRITE_ATTEMPTS = 4
EXIT_STORE_UNAVAILABLE = 75  # EX_TEMPFAIL: a supervisor should restart us
EXIT_CANNOT_PROCESS = 70  # EX_SOFTWARE: a batch the code cannot handle; needs a person


class Aggregator:
    def __init__(
        self,
        store: Store,
        book: PriceBook,
        window: EventWindow,
        partitions: int,
        dedupe_window: timedelta,
        *,
        topic: str,
    ) -> None:
        self.store = store
        self.topic = topic
        # Per partition: the epoch of the log being read (aggregation.log_identity), the
        # last durable record in it, and the offset of the last record handed to us.
        self.epochs: dict[int, int] = {}
        self.checkpoints: dict[int, Checkpoint] = {}
        self._last_offset: dict[int, int] = {}
        self._unprepared: set[int] = set()  # assigned, but log and state not checked yet
        self._rewound: set[int] = set()  # read again from the start: offsets go back once
        self.state = UsageState()
        self.window = window
        self.dedupe_window = dedupe_window
        self._next_rotation = time.monotonic() + dedupe_window.total_seconds()
        self.subscriptions = SubscriptionDirectory(store.subscription_entries)
        self.processor = BatchProcessor(
            self.state,
            self.subscriptions.entry,
            book,
            ChargeTable.compile(book),
            window=window,
            partitions=partitions,
        )

    def _oldest_open_period(self) -> date:
        """The label of the first period an accepted event can still fall in, whatever
        its subscription's anchor day (the latest anchor starts the period earliest)."""
        anchor = self.subscriptions.latest_anchor
        return Period.of(self.window.bounds()[0].date(), anchor).label

    def reload(self, partitions: set[int]) -> None:
        self.state.forget_partitions(partitions)
        since = datetime.now(UTC) - self.dedupe_window
        self.state.restore(
            self.store.load_marks(partitions, since),
            self.store.load_totals(partitions, self._oldest_open_period()),
            self.store.load_refusals(partitions, since),
            self.store.load_distinct(partitions, self._oldest_open_period()),
        )
        log.info(
            "restored state of partitions %s: %d marks, %d totals",
            sorted(partitions), len(self.state.marks), len(self.state.totals),
        )  # fmt: skip

    def assigned(self, partitions: set[int]) -> None:
        """Note what the group gave us; ``prepare`` readies it before a record is handled."""
        self._unprepared |= partitions

    async def prepare(self, bootstrap_servers: str) -> set[int]:
        """Before a batch: identify the logs of newly assigned partitions and reload their
        state; return the partitions that hold a new log, to be read from their start.
        This runs in the stream loop: Faust resumes fetching while its assignment callbacks
        still run, so a callback that awaits could lose the race to a batch."""
        if not self._unprepared:
            return set()
        partitions, self._unprepared = self._unprepared, set()
        found = await self.identify_logs(bootstrap_servers, partitions)
        self.reload(partitions)
        self._rewound |= found
        return found

    async def identify_logs(self, bootstrap_servers: str, partitions: set[int]) -> set[int]:
        """Is each partition still the log its newest checkpoint was taken in? A new one
        gets the next epoch, is recorded and is said out loud; return those."""
        stored = self.store.load_checkpoints(self.topic, partitions)
        latest = self.store.latest_epochs(self.topic, partitions)
        verdicts = await probe(bootstrap_servers, self.topic, stored)
        for partition in partitions:
            self._last_offset.pop(partition, None)
            self.checkpoints.pop(partition, None)
            self.epochs[partition] = latest.get(partition, 0)
        found = set()
        for checkpoint in stored:
            judgement, reason = verdicts[checkpoint.partition]
            if judgement is Judgement.NEW_LOG:
                self._new_log(checkpoint.partition, checkpoint.offset, reason)
                found.add(checkpoint.partition)
            else:
                self.checkpoints[checkpoint.partition] = checkpoint
        return found

    def _new_log(self, partition: int, previous_offset: int, reason: str) -> None:
        epoch = self.epochs.get(partition, 0) + 1
        self.store.record_new_log(self.topic, partition, epoch, previous_offset, reason)
        self.epochs[partition] = epoch
        self.checkpoints.pop(partition, None)
        metrics.NEW_LOGS.labels(str(partition)).inc()
        log.warning(
            "partition %d of %s holds a new log (%s): its events are billed as new, from "
            "epoch %d", partition, self.topic, reason, epoch,
            extra={"partition": partition, "epoch": epoch, "previous_offset": previous_offset},
        )  # fmt: skip

    async def positions(self, bootstrap_servers: str, messages: list[Any]) -> list[Record]:
        """The records of a batch, each placed by its log's epoch and its offset. Offsets
        that go back behind the last record handed to us are reported; they are a new
        log unless the broker still shows the last durable record where it was."""
        records = []
        for message in messages:
            partition, offset = message.partition, message.offset
            last = self._last_offset.get(partition)
            if partition in self._rewound and (last is None or offset <= last):
                self._rewound.discard(partition)  # as asked: the new log from its start
            elif last is not None and offset <= last:
                await self._went_backwards(bootstrap_servers, partition, offset, last)
            self._last_offset[partition] = offset
            epoch = self.epochs.get(partition, 0)
            records.append((partition, ordinal(epoch, offset), message.value))
        return records

    async def _went_backwards(
        self, bootstrap_servers: str, partition: int, offset: int, last: int
    ) -> None:
        metrics.OFFSETS_BACKWARDS.labels(str(partition)).inc()
        log.warning("partition %d of %s went back from offset %d to %d",
                    partition, self.topic, last, offset)  # fmt: skip
        checkpoint = self.checkpoints.get(partition)
        if checkpoint is None:
            # Nothing of this log is durable yet, so there is nothing to compare with; a
            # replay taken for new events is still caught by its dedupe mark.
            self._new_log(partition, last, f"offsets went back from {last} to {offset}")
            return
        verdicts = await probe(bootstrap_servers, self.topic, [checkpoint])
        judgement, reason = verdicts[partition]
        if judgement is Judgement.NEW_LOG:
            self._new_log(partition, checkpoint.offset, reason)

    def checkpoints_of(self, messages: list[Any]) -> list[Checkpoint]:
        """Per partition, the batch's last record: what the store keeps once it is durable."""
        last = {message.partition: message for message in messages}
        return [
            Checkpoint(partition, self.epochs.get(partition, 0), m.offset,
                       fingerprint(m.key, m.value, round(m.timestamp * 1000)))
            for partition, m in last.items()
        ]  # fmt: skip

    def _retain(self) -> None:
        """Once per dedupe window: rotate the marks, drop totals no event can reach."""
        now = time.monotonic()
        if now < self._next_rotation:
            return
        self._next_rotation = now + self.dedupe_window.total_seconds()
        forgotten = self.state.rotate_marks()
        dropped = self.state.forget_totals_before(self._oldest_open_period())
        log.info("dedupe window rotated: %d marks and %d closed totals dropped", forgotten, dropped)

    def handle(self, records: list[Record], checkpoints: Sequence[Checkpoint]) -> BatchResult:
        self._retain()
        try:
            result = self.processor.process(records)
        except Exception:
            # Raising would let take_events acknowledge the batch unbilled: stop instead.
            log.critical("cannot process a batch: exiting without acknowledging it", exc_info=True)
            os._exit(EXIT_CANNOT_PROCESS)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                began = time.perf_counter()
                self.store.write_batch(result, self.topic, checkpoints)
                metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - began)
                self.checkpoints.update((c.partition, c) for c in checkpoints)
                _count(result, self.state)
                return result
            except Exception:
                metrics.STORE_WRITE_ERRORS.inc()
                log.exception("store write failed (attempt %d of %d)", attempt, WRITE_ATTEMPTS)
                time.sleep(0.5 * 2**attempt)
        log.critical("store unavailable: exiting without acknowledging the batch")
        os._exit(EXIT_STORE_UNAVAILABLE)


LATE = timedelta(hours=1)


def _count(result: BatchResult, state: UsageState) -> None:
    """The batch's figures, once it is durable."""
    accepted, rejected = len(result.accepted), len(result.rejected)
    metrics.EVENTS_CONSUMED.inc(accepted + rejected + result.duplicates)
    metrics.BATCH_EVENTS.observe(accepted + rejected + result.duplicates)
    metrics.EVENTS_AGGREGATED.inc(accepted)
    metrics.EVENTS_DEDUPLICATED.inc(result.duplicates)
    for rejection in result.rejected:
        metrics.EVENTS_REJECTED.labels(rejection.reason).inc()
    late_before = datetime.now(UTC) - LATE
    metrics.EVENTS_LATE.inc(sum(1 for a in result.accepted if a.event.timestamp < late_before))
    metrics.TOTALS_RATED.inc(len(result.rated))
    metrics.RATING_SECONDS.observe(result.rating_seconds)
    for table, rows in (("events", accepted), ("rated_usage", len(result.rated)),
                        ("rejected_events", rejected)):  # fmt: skip
        metrics.STORE_ROWS.labels(table).inc(rows)
    metrics.STATE_ENTRIES.labels("dedupe_marks").set(len(state.marks))
    metrics.STATE_ENTRIES.labels("totals").set(len(state.totals))


async def _publish_dead_letters(
    app: faust.App, settings: Settings, rejected: list[Rejection]
) -> None:
    """Send the batch's rejections to the dead-letter topic and wait for the broker. A stop
    request must not cut the sends short (hence the shield); a failure ends the process
    before the batch is acknowledged, so it replays: dead letters are at least once."""

    async def send_all() -> None:
        now = datetime.now(UTC)
        pending = []
        for rejection in rejected:
            letter = DeadLetter(
                reason=rejection.reason,
                detail=rejection.detail,
                event=rejection.payload.decode("utf-8", "replace"),
                topic=settings.events_topic,
                partition=rejection.partition,
                offset=split(rejection.offset)[1],
                index=rejection.index,
                rejected_at=now,
            )
            value = encode_dead_letter(letter)
            pending.append(
                await app.producer.send(settings.dead_letter_topic, None, value, None, None, None)
            )
        await asyncio.gather(*pending)

    try:
        await asyncio.shield(send_all())
    except Exception:
        log.critical("cannot publish dead letters: exiting without acknowledging the batch")
        os._exit(EXIT_STORE_UNAVAILABLE)


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
    settings: Settings, bootstrap_servers: str, aggregator: Aggregator, book: PriceBook
) -> faust.App:
    app = faust.App(settings.consumer_group, **faust_settings(settings, bootstrap_servers))
    app.transport = PromptFetchTransport(app.conf.broker_consumer, app)
    # Faust's own sensor adds what only it sees: rebalances, assignment and send latency,
    # records per partition (meterline_faust_*; records, not events: a record holds many).
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(REGISTRY, "meterline_faust"))
    topic = app.topic(
        settings.events_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.topic_partitions,
    )

    durable: dict[int, int] = {}  # partition -> next offset not yet durable

    @app.agent(topic)
    async def aggregate(stream: Any) -> None:
        async for events in stream.take_events(
            settings.batch_max_records, within=settings.batch_within_seconds
        ):
            messages = [e.message for e in events]
            try:
                for partition in await aggregator.prepare(bootstrap_servers):
                    assert isinstance(app.consumer, RewindingConsumer)
                    await app.consumer.rewind(TP(settings.events_topic, partition), 0)
                records = await aggregator.positions(bootstrap_servers, messages)
            except Exception:
                # As in handle: raising would let take_events acknowledge the batch unbilled.
                log.critical(
                    "cannot tell which log the batch comes from (broker or store unavailable): "
                    "exiting without acknowledging it", exc_info=True,
                )  # fmt: skip
                os._exit(EXIT_STORE_UNAVAILABLE)
            result = aggregator.handle(records, aggregator.checkpoints_of(messages))
            if result.rejected:
                await _publish_dead_letters(app, settings, result.rejected)
                log.info(
                    "dead-lettered %d of a batch's events", len(result.rejected),
                    extra={"rejected": len(result.rejected),
                           "by_reason": dict(Counter(r.reason for r in result.rejected))},
                )  # fmt: skip
            queryable = time.time()
            for event in events:
                metrics.EVENT_AGE_SECONDS.observe(queryable - event.message.timestamp)
                durable[event.message.partition] = event.message.offset + 1

    async def on_assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        (assigned,) = args
        mine = {tp.partition for tp in assigned if tp.topic == settings.events_topic}
        if mine:
            aggregator.assigned(mine)

    # mode types receivers as a union of callables that mypy cannot match a coroutine against.
    app.on_partitions_assigned.connect(cast(Any, on_assigned))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = exposition()
        # aiohttp refuses a charset in content_type=, so the header is set as it is.
        return web.bytes(body, headers={"Content-Type": content_type})

    async def measure_lag() -> None:
        """Per partition: the highwater mark the broker gave on the last fetch, minus the
        next offset to make durable."""
        for tp in app.consumer.assignment():
            behind = _lag(app, settings.events_topic, tp.partition, durable)
            if tp.topic == settings.events_topic and behind is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(behind)

    async def measure_tables() -> None:
        # The reconciliation identity over the last hour's records: a record whose events
        # are not all accounted for, or one that left no row at all, shows here.
        since = datetime.now(UTC) - timedelta(hours=1)
        metrics.UNACCOUNTED_EVENTS.set(unaccounted_events(aggregator.store, since))
        for table, (rows, size) in aggregator.store.table_sizes().items():
            metrics.STORE_TABLE_ROWS.labels(table).set(rows)
            metrics.STORE_TABLE_BYTES.labels(table).set(size)
        # Invoice runs are short CLI processes Prometheus never sees; the store remembers them.
        for action, (runs, last) in aggregator.store.invoice_runs().items():
            metrics.INVOICE_RUNS.labels(action).set(runs)
            metrics.INVOICE_LAST_RUN.labels(action).set(last.replace(tzinfo=UTC).timestamp())

    async def follow_subscriptions() -> None:
        await follow(
            bootstrap_servers, settings.subscriptions_topic, aggregator.subscriptions.absorb
        )

    # mode's timer and task decorators are untyped.
    cast(Any, app.timer)(interval=5.0)(measure_lag)
    cast(Any, app.timer)(interval=60.0)(measure_tables)
    cast(Any, app.task)(follow_subscriptions)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        """200 when the store answers and partitions are assigned; the lag per partition."""
        try:
            aggregator.store.ping()
            store = "ok"
        except Exception as error:
            store = f"error: {error}"
        assigned = sorted(tp.partition for tp in app.consumer.assignment()
                          if tp.topic == settings.events_topic)  # fmt: skip
        lag = {str(p): _lag(app, settings.events_topic, p, durable) for p in assigned}
        healthy = store == "ok" and bool(assigned)
        body = {"status": "ok" if healthy else "degraded", "store": store,
                "partitions": assigned, "lag": lag}  # fmt: skip
        return web.json(body, status=200 if healthy else 503)

    # With chDB this process owns the store, so reads of it are served here (the gateway
    # forwards them); the query is short and runs between batches on the same loop.
    secret = settings.internal_key()

    def from_gateway(request: Any) -> bool:
        """Internal pages answer only a caller that shows this run's secret (the gateway
        checked the API key already); with no secret configured, no caller."""
        shown = request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(secret) and hmac.compare_digest(shown.encode(), secret.encode())

    def refused(web: Any) -> Any:
        return web.json({"title": "Unauthorized", "status": 401,
                         "detail": "an internal page of the worker: for its gateway only"},
                        status=401)  # fmt: skip

    @app.page("/usage/{tenant}/{subscription}/{period}")
    async def usage(web: Any, request: Any, tenant: str, subscription: str, period: str) -> Any:
        if not from_gateway(request):
            return refused(web)
        day = date.fromisoformat(f"{period}-01")
        answer = read_usage(aggregator.store, book, tenant, subscription, day)
        return web.json(msgspec.to_builtins(answer))

    # And so are subscription changes the gateway forwards: stored here, taken into this
    # worker's directory at once, and published for the others. Only then: with a
    # ClickHouse server the gateway writes itself, and the worker offers no such page.
    registry_decoder = msgspec.json.Decoder(RegistryRequest)

    class Registry(View):
        async def post(self, request: Any) -> Any:
            if not from_gateway(request):
                return refused(self)
            asked = registry_decoder.decode(await request.read())
            now = datetime.now(UTC)
            answered, written = answer(aggregator.store, book, settings.max_clock_skew_seconds,
                                       asked, now)  # fmt: skip
            version = version_of(now)
            for owner, entry in entries(written, version):
                aggregator.subscriptions.absorb(owner, entry)
            if written:
                warning = await announce(bootstrap_servers, settings.subscriptions_topic,
                                         written, version)  # fmt: skip
                if warning:
                    log.warning("%s", warning)
            return self.bytes(msgspec.json.encode(answered), content_type="application/json")

    if settings.clickhouse_url is None:
        app.page("/registry")(Registry)

    return app


def _lag(app: faust.App, topic: str, partition: int, durable: dict[int, int]) -> int | None:
    """The highwater mark the broker gave on the last fetch minus the next offset to make
    durable; None before the first fetch."""
    highwater = app.consumer.highwater(TP(topic, partition))
    return None if highwater is None else max(0, highwater - durable.get(partition, 0))


def run_worker(settings: Settings, bootstrap_servers: str, book: PriceBook) -> None:
    """Run until SIGTERM/SIGINT; Faust handles the signals and a graceful stop."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in (settings.events_topic, settings.dead_letter_topic):
        asyncio.run(ensure_topic(bootstrap_servers, name, settings.topic_partitions))
    partitions = asyncio.run(partition_count(bootstrap_servers, settings.events_topic))
    if partitions != settings.topic_partitions:
        log.warning(
            "%s has %d partitions, not the configured %d: using %d",
            settings.events_topic, partitions, settings.topic_partitions, partitions,
        )  # fmt: skip
    try:
        store = Store.connect(settings)
    except StoreInUseError as error:
        log.critical("%s", error)
        raise SystemExit(EXIT_STORE_IN_USE) from None
    store.migrate()
    window = settings.event_window()
    dedupe_window = timedelta(hours=settings.dedupe_window_hours)
    aggregator = Aggregator(
        store, book, window, partitions, dedupe_window, topic=settings.events_topic
    )
    app = create_app(settings, bootstrap_servers, aggregator, book)
    worker = faust.Worker(
        app, loglevel="WARN", quiet=True, redirect_stdouts=False,
        logging_config=logs.logging_config(),
    )  # fmt: skip
    worker.execute_from_commandline()
