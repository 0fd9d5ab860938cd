"""Two Faust workers in one consumer group: when the second joins, partitions move between
them, and every rated total still equals the Decimal oracle. Needs a ClickHouse server
that both processes share (CLICKHOUSE_URL); the test summary says so when it is absent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from base.settings import Settings
from ingest.producer import produce
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker
from meterline.worker_process import WorkerProcess
from rating.loading import load_price_book
from tests.expected import expected_totals
from tests.stores import Stores

pytestmark = pytest.mark.integration


def test_a_second_worker_takes_over_partitions_without_loss(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    clickhouse_server_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_factory(
        tmp_path,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        clickhouse_url=clickhouse_server_url,
    )
    bootstrap = broker.bootstrap_servers
    book = load_price_book(PRICE_BOOK)
    period = datetime.now(UTC).date().replace(day=1)
    subs = generator.subscriptions(300, list(book.versions), 5, period)
    prepare_store(settings, subs)
    sent = list(generator.events(subs, 60_000, period, duplicate_share=0.1, seed=5))
    halves = sent[: len(sent) // 2], sent[len(sent) // 2 :]

    first = WorkerProcess(settings, bootstrap, tmp_path / "first.log")
    second = WorkerProcess(settings, bootstrap, tmp_path / "second.log")
    first.start()
    try:
        offsets = asyncio.run(produce(bootstrap, settings.events_topic, halves[0], batch_events=50))
        time.sleep(3)  # the first worker is part-way through when the second joins
        second.start()
        later = asyncio.run(produce(bootstrap, settings.events_topic, halves[1], batch_events=50))
        offsets = {p: max(o, later.get(p, -1)) for p, o in offsets.items()} | {
            p: o for p, o in later.items() if p not in offsets
        }
        asyncio.run(
            wait_until_consumed(settings, bootstrap, offsets, first.exit_code, lambda _: None)
        )
    finally:
        assert second.stop() == 0, second.log_tail()
        assert first.stop() == 0, first.log_tail()

    distinct = generator.distinct(sent)
    expected = expected_totals(book, {s.subscription: s.plan for s in subs}, distinct)
    store = Stores.open(settings)
    try:
        rows = store.reads.rated_totals(period)
        assert store.connection.count("events") == len(distinct)
    finally:
        store.connection.drop_database()
        store.close()
    billed = {
        (r.subscription, r.meter, r.period_start, r.plan_version, r.group): (
            r.quantity, r.amount,
        )
        for r in rows
    }  # fmt: skip
    assert billed == {key: value for key, value in expected.items() if key[2] == period}
