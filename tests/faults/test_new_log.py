"""A new log under the same topic name: the embedded broker restarted (it keeps topics in
memory, so offsets start at 0 again), or the topic deleted and created again under a
running worker. The new log's events must be billed, not taken for replays of the old
log's events at the same offsets; events re-sent from the old log still count once."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from aggregation.reconcile import reconcile
from base.events import UsageEvent
from base.kafka_admin import ensure_topic
from base.settings import Settings
from ingest.producer import produce
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import WorkerProcess
from rating.loading import load_price_book
from tests.expected import expected_totals, print_reconciliation
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SEED = int(os.environ.get("METERLINE_FAULT_SEED", "20261201"))
EVENTS = 12_000


class Run:
    """One workload over 100 subscriptions, sent in parts, with what each part produced."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.book = load_price_book(PRICE_BOOK)
        period = datetime.now(UTC).date().replace(day=1)
        self.subs = generator.subscriptions(100, list(self.book.versions), SEED, period)
        prepare_store(settings, self.subs)
        self.stream = list(
            generator.events(self.subs, EVENTS, period, duplicate_share=0.05, seed=SEED)
        )
        self.sent: list[UsageEvent] = []
        self.last_offsets: dict[int, int] = {}
        self.log = tmp_path / "worker.log"

    def send(self, bootstrap: str, events: list[UsageEvent]) -> None:
        offsets = asyncio.run(
            produce(bootstrap, self.settings.events_topic, events, batch_events=50)
        )
        for partition, offset in offsets.items():
            self.last_offsets[partition] = max(offset, self.last_offsets.get(partition, -1))
        self.sent.extend(events)

    def wait(self, bootstrap: str, worker: WorkerProcess) -> None:
        asyncio.run(wait_until_consumed(self.settings, bootstrap, self.last_offsets,
                                        worker.exit_code, lambda _: None))  # fmt: skip

    def check(self, new_logs_at_least: int) -> None:
        distinct = generator.distinct(self.sent)
        expected = expected_totals(self.book, {s.subscription: s.plan for s in self.subs},
                                   distinct)  # fmt: skip
        store = Stores.open(self.settings)
        try:
            periods = sorted({key[2] for key in expected})
            rows = [row for period in periods for row in store.reads.rated_totals(period)]
            stored = store.connection.count("events")
            found = reconcile(store.reads)
            new_logs = int(store.connection.client.command(
                f"SELECT count() FROM {store.connection.table('log_incarnations')}"
            ))  # fmt: skip
        finally:
            store.close()
        billed = {(r.subscription, r.meter, r.period_start, r.plan_version,
                   r.group): (r.quantity, r.amount) for r in rows}  # fmt: skip
        print(f"\nseed {SEED}: sent {len(self.sent):,}, duplicates "
              f"{len(self.sent) - len(distinct):,}, billed {stored:,} distinct events, "
              f"{new_logs} new logs found")  # fmt: skip
        print_reconciliation(found)
        assert found.holds, found.first_failure()
        assert stored == len(distinct)
        assert billed == expected
        assert new_logs >= new_logs_at_least


def resend_some(run: Run, rng: random.Random) -> list[UsageEvent]:
    return rng.sample(run.sent, k=len(run.sent) // 10)


def test_a_restarted_memory_broker_is_a_new_log_whose_events_are_all_billed(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    settings = settings_factory(tmp_path)
    run = Run(settings, tmp_path)
    half = EVENTS // 2
    with EmbeddedBroker(tmp_path / "broker-1.log") as first:
        worker = WorkerProcess(settings, first.bootstrap_servers, run.log)
        worker.start()
        try:
            run.send(first.bootstrap_servers, run.stream[:half])
            run.wait(first.bootstrap_servers, worker)
        finally:
            assert worker.stop() == 0, worker.log_tail()
    # The second broker knows nothing of the first: offsets start at 0 again, and the
    # consumer group has no committed offsets.
    run.last_offsets.clear()
    with EmbeddedBroker(tmp_path / "broker-2.log") as second:
        worker = WorkerProcess(settings, second.bootstrap_servers, run.log)
        run.send(second.bootstrap_servers, run.stream[half:] + resend_some(run, rng))
        worker.start()
        try:
            run.wait(second.bootstrap_servers, worker)
        finally:
            assert worker.stop() == 0, worker.log_tail()
    run.check(new_logs_at_least=1)


def test_a_topic_recreated_under_a_running_worker_is_a_new_log(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)
    bootstrap = broker.bootstrap_servers
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=bootstrap,
                                worker_web_port=free_port())  # fmt: skip
    run = Run(settings, tmp_path)
    third = EVENTS // 3
    worker = WorkerProcess(settings, bootstrap, run.log)
    worker.start()
    try:
        run.send(bootstrap, run.stream[:third])
        run.wait(bootstrap, worker)
        asyncio.run(recreate(bootstrap, settings))
        run.last_offsets.clear()
        run.send(bootstrap, run.stream[third:] + resend_some(run, rng))
        # Faust stops fetching a topic deleted under it, and says nothing: a restart, as
        # the README tells whoever recreates a topic, finds the new log. The group's
        # commits still cover the old log's offsets, so wait for that before them.
        assert worker.stop() == 0, worker.log_tail()
        worker.start()
        wait_for_new_logs(settings.worker_web_port, worker)
        run.wait(bootstrap, worker)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    run.check(new_logs_at_least=1)


def wait_for_new_logs(port: int, worker: WorkerProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.exit_code() is None, worker.log_tail()
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        except httpx.ConnectError:  # still starting
            time.sleep(0.5)
            continue
        found = sum(sample.value for family in text_string_to_metric_families(text)
                    if family.name == "meterline_new_logs" for sample in family.samples
                    if sample.name == "meterline_new_logs_total")  # fmt: skip
        if found:
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker found no new log in {timeout:.0f} s")


async def recreate(bootstrap: str, settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.events_topic])
    finally:
        await admin.close()
    await asyncio.sleep(1.0)
    await ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions)
