"""``meterline serve``: the ingest gateway on uvicorn, with the embedded broker when no
Kafka is configured and, unless told otherwise, a worker process beside it that is
restarted if it dies (it recovers from the store and the topic, losing nothing)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Callable

import uvicorn
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from aggregation.handlers import DUNNING, WEBHOOKS
from base import logs
from base.kafka_admin import GroupProgress, ensure_topic, log_ends, partition_count
from base.processes import EXIT_STORE_IN_USE, DirectoryLock, describe, port_holder
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.gateway import Gateway
from ingest.store_access import DirectStore, NoStore, StoreAccess, WorkerStore
from meterline.cli_support import handlers
from meterline.demo import price_book_path
from meterline.embedded_broker import free_port, kafka
from meterline.worker_process import WorkerProcess, settings_env
from rating.loading import load_price_book
from rating.plans import PriceBook


class ServeError(RuntimeError):
    """The gateway could not start; the message says why."""


class _Supervisor(threading.Thread):
    def __init__(self, worker: WorkerProcess, say: Callable[[str], None]) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.worker = worker
        self.say = say
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            code = self.worker.exit_code()
            if code is None or self.stopping.is_set():
                continue
            if code == EXIT_STORE_IN_USE:  # restarting cannot help: say so once and stop
                self.say(f"the worker cannot start: {self.worker.log_tail(1)}")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self.say(f"the worker exited with {code}; restarting it:\n{self.worker.log_tail()}")
            self.worker.start()


def _check_store_is_free(settings: Settings) -> None:
    """The worker will own chDB: a leftover process holding it is named before anything
    starts, rather than found by a worker that cannot open it."""
    holder = DirectoryLock.take(settings.chdb_path)
    if holder is not None:
        raise ServeError(
            f"the store {settings.chdb_path} is in use by process {describe(holder)}; stop it "
            f"(kill {holder}) if it is left over from an earlier run, then start again"
        )
    DirectoryLock.release(settings.chdb_path)


def _listen(host: str, port: int) -> socket.socket:
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        holder = port_holder(port)
        held = (f"; process {describe(holder)} listens there: stop it (kill {holder}) if it "
                "is left over from an earlier run") if holder else ""  # fmt: skip
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}{held}") from None
    return listening


def serve_gateway(
    settings: Settings,
    book: PriceBook,
    *,
    with_worker: bool,
    processes: int,
    say: Callable[[str], None],
) -> None:
    if with_worker and settings.clickhouse_url is None:
        # The worker will own chDB: it serves the reads, on a port of its own.
        # Its pages for them answer only a caller that shows this run's secret.
        port = settings.worker_web_port or free_port()
        secret = settings.internal_secret or SecretStr(secrets.token_urlsafe(32))
        settings = settings.model_copy(
            update={"worker_web_port": port, "usage_reads": "worker", "internal_secret": secret}
        )
    elif settings.clickhouse_url is None and processes > 1:
        say("usage reads and subscription changes over HTTP are off: several gateway "
            "processes cannot share chDB without a worker (run one, or use a ClickHouse "
            "server)")  # fmt: skip
        settings = settings.model_copy(update={"usage_reads": "off"})
    logs.configure()
    if settings.embedded_kafka:
        # Gateway processes see the embedded broker's address as configured Kafka.
        settings = settings.model_copy(update={"kafka_idempotence": False})
    keys = KeyRing(settings.api_keys_path)
    if with_worker and settings.clickhouse_url is None:
        _check_store_is_free(settings)
    with kafka(settings) as bootstrap:
        for topic in (settings.events_topic, settings.dead_letter_topic):
            asyncio.run(ensure_topic(bootstrap, topic, settings.topic_partitions))
        supervisor = None
        try:
            if with_worker:
                worker = WorkerProcess(settings, bootstrap, settings.data_dir / "worker.log")
                worker.start()
                supervisor = _Supervisor(worker, say)
                supervisor.start()
            _announce(settings, keys, processes, say)
            if processes == 1:
                _run_one(gateway_of(settings, book, bootstrap, periodic=True), settings)
            else:
                _run_several(settings, bootstrap, processes)
            if supervisor is not None and settings.embedded_kafka:
                try:
                    asyncio.run(drain(settings, bootstrap, supervisor.worker, say))
                except KafkaError as error:
                    say(f"stopping without knowing whether every acknowledged event is billed: "
                        f"the embedded broker did not answer ({error})")  # fmt: skip
        finally:
            if supervisor is not None:
                supervisor.stopping.set()
                supervisor.worker.stop()


DRAIN_SECONDS = 120.0


async def drain(
    settings: Settings, bootstrap: str, worker: WorkerProcess, say: Callable[[str], None]
) -> None:
    """On a clean stop, with the gateway closed: wait until the worker has made durable every
    record on the embedded broker, which forgets them when it stops. Say what is left if
    it cannot (the worker died, or too long): those events were acknowledged, and only a
    resend (the same ids count once) will bill them."""
    partitions = list(range(await partition_count(bootstrap, settings.events_topic)))
    say("stopping: waiting for the worker to bill every acknowledged event")
    deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
    group = GroupProgress(bootstrap, settings.consumer_group, settings.events_topic)
    async with group:
        while True:
            committed = await group.committed(partitions)
            ends = await log_ends(bootstrap, settings.events_topic, committed)
            behind = sum(max(0, ends[p] - committed[p]) for p in partitions)
            if behind == 0:
                say("stopped cleanly: every acknowledged event is billed")
                return
            if worker.exit_code() is not None or asyncio.get_running_loop().time() > deadline:
                say(
                    f"stopping with {behind:,} records (batches of events) not yet billed: the "
                    "embedded broker loses them now; resend them, the same event ids count once"
                )
                return
            await asyncio.sleep(0.5)


def gateway_of(
    settings: Settings, book: PriceBook, bootstrap: str, *, periodic: bool = False
) -> Gateway:
    """The gateway, using the store itself, or the worker when it owns chDB; ``periodic``:
    it also asks for a dunning run every ``dunning_interval_hours`` and a webhook delivery
    run every ``webhook_interval_seconds`` (one gateway process does: with several,
    schedule `meterline dunning run` and `meterline webhooks deliver` instead)."""
    store: StoreAccess = DirectStore(settings, book, bootstrap, handlers())
    if settings.usage_reads == "worker":
        worker = f"http://{settings.worker_web_host}:{settings.worker_web_port}"
        store = WorkerStore(worker, settings.internal_key())
    elif settings.usage_reads == "off":
        store = NoStore("the store is not reached from here (METERLINE_USAGE_READS=off)")
    every = {DUNNING: settings.dunning_interval_hours * 3600,
             WEBHOOKS: settings.webhook_interval_seconds} if periodic else {}  # fmt: skip
    return Gateway(
        settings, book, bootstrap, KeyRing(settings.api_keys_path), store, periodic=every
    )


def gateway_from_environment() -> Starlette:
    """The app each gateway process builds when there are several (uvicorn spawns them,
    so they read the settings the parent put in the environment)."""
    logs.configure()
    settings = Settings()
    assert settings.kafka_bootstrap_servers is not None
    book = load_price_book(price_book_path(settings))
    return gateway_of(settings, book, settings.kafka_bootstrap_servers).asgi(own_lifespan=True)


def _announce(
    settings: Settings, keys: KeyRing, processes: int, say: Callable[[str], None]
) -> None:
    for name, value in settings.describe().items():
        say(f"{name:>12}: {value}")
    say(f"{'gateway':>12}: http://{settings.gateway_host}:{settings.gateway_port}/v1/events "
        f"({processes} process{'es' if processes > 1 else ''})")  # fmt: skip
    say(f"{'API keys':>12}: {len(keys.records())} in {settings.api_keys_path}")
    if settings.embedded_kafka:
        say(
            f"{'durability':>12}: the embedded broker keeps events in memory. A clean stop "
            "(Ctrl-C, SIGTERM) first waits until every acknowledged event is billed; a crash "
            "(SIGKILL, OOM, power loss) loses the events not billed yet: resend them (the same "
            "ids count once), or point KAFKA_BOOTSTRAP_SERVERS at Kafka"
        )
    if not keys.records():
        say("no API keys yet: create one with `meterline keys create --tenant T`")


# uvicorn logs through the logging meterline configured (JSON off a terminal).
_UVICORN = {"loop": "uvloop", "http": "httptools", "log_config": None, "access_log": False}


def _run_one(gateway: Gateway, settings: Settings) -> None:
    config = uvicorn.Config(gateway.asgi(own_lifespan=True), **_UVICORN)  # type: ignore[arg-type]
    listening = _listen(settings.gateway_host, settings.gateway_port)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for
    # the handler it found; a handler that ignores it lets the worker and broker be stopped.
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {stop: signal.signal(stop, lambda *_: None) for stop in stops}
    try:
        uvicorn.Server(config).run(sockets=[listening])
    except SystemExit:
        raise ServeError("the gateway did not start (the error is above)") from None
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _run_several(settings: Settings, bootstrap: str, processes: int) -> None:
    """Processes sharing one listening socket, each with its own producer: the gateway is
    CPU-bound in Python, so this is how it uses more than one core."""
    os.environ.update(settings_env(settings, bootstrap))
    # The processes write their metrics to files there; /metrics in any of them sums them.
    shared_metrics = settings.data_dir / "gateway-metrics"
    shutil.rmtree(shared_metrics, ignore_errors=True)
    shared_metrics.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared_metrics.resolve())
    config = uvicorn.Config(
        "meterline.serving:gateway_from_environment", factory=True, workers=processes,
        **_UVICORN,  # type: ignore[arg-type]
    )  # fmt: skip
    listening = _listen(settings.gateway_host, settings.gateway_port)
    Multiprocess(config, sockets=[listening]).run()
