"""A producer that knows nothing of meterline's partitioning (one event per record, on any
partition, as a client with another default partitioner sends them, retries included) is
billed exactly once per distinct event, and the store accounts for every record."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation.dead_letters import is_forwarded_copy
from aggregation.reconcile import reconcile
from base.events import UsageEvent, encode, partition_of
from base.kafka_admin import GroupProgress, ensure_topic
from base.settings import Settings
from meterline.demo import generator
from meterline.demo.job import prepare_store
from meterline.embedded_broker import EmbeddedBroker
from meterline.worker_process import WorkerProcess
from tests.integration.kafka_helpers import read_records, send_raw
from tests.stores import Stores

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
SUBSCRIPTIONS = [f"sub-{n}" for n in range(6)]


def test_events_on_random_partitions_with_retries_are_billed_once_each(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    bootstrap = broker.bootstrap_servers
    month = NOW.date().replace(day=1)
    prepare_store(settings, [generator.subscription("demo", name, f"c-{name}", "starter", month)
                             for name in SUBSCRIPTIONS])  # fmt: skip
    rng = random.Random(5)
    distinct = [
        UsageEvent(f"e{n}", "demo", rng.choice(SUBSCRIPTIONS), "api_calls", rng.randint(1, 9),
                   NOW - timedelta(minutes=rng.randint(1, 600)), "svc")
        for n in range(300)
    ]  # fmt: skip
    sent = distinct + rng.sample(distinct, 60)  # retries, each on a partition of its own
    records = [(rng.randrange(settings.topic_partitions), encode(e)) for e in sent]
    # Each event sent to another partition than its subscription's comes back as a record
    # of its own, on the right one.
    misplaced = sum(partition != partition_of(event.partition_key(), settings.topic_partitions)
                    for (partition, _), event in zip(records, sent, strict=True))  # fmt: skip
    assert misplaced > 100  # most of them, as a random partitioner does

    async def send() -> None:
        for name in (settings.events_topic, settings.dead_letter_topic):
            await ensure_topic(bootstrap, name, settings.topic_partitions)
        await send_raw(bootstrap, settings.events_topic, records)

    asyncio.run(send())
    worker = WorkerProcess(settings, bootstrap, tmp_path / "worker.log")
    worker.start()
    try:
        asyncio.run(_until_committed(settings, bootstrap, len(sent) + misplaced, worker.exit_code))
    finally:
        assert worker.stop() == 0, worker.log_tail()
    # Each forwarded copy is on its subscription's partition and says it is a copy, so
    # that a worker which disagreed on the partition count would refuse it, not loop.
    log = asyncio.run(read_records(bootstrap, settings.events_topic, settings.topic_partitions,
                                   len(sent) + misplaced))  # fmt: skip
    copies = [record for record in log if is_forwarded_copy(record.headers)]
    assert len(copies) == misplaced
    assert all(record.partition == partition_of(record.key, settings.topic_partitions)
               for record in copies)  # fmt: skip

    store = Stores.open(settings)
    try:
        assert store.connection.count("events") == len(distinct)
        billed = {
            (row.subscription, row.meter): row.quantity
            for row in store.reads.rated_totals(month, tenant="demo")
        }
        expected: dict[tuple[str, str], int] = {}
        for event in distinct:
            key = (event.subscription, "api_calls")
            expected[key] = expected.get(key, 0) + event.quantity
        assert billed == expected
        found = reconcile(store.reads)
        assert found.holds, found.first_failure()
        assert sum(m.billed + m.duplicates for m in found.months) == len(sent)
        assert sum(m.forwarded for m in found.months) == misplaced
    finally:
        store.close()


async def _until_committed(
    settings: Settings, bootstrap: str, records: int, exit_code: Callable[[], int | None]
) -> None:
    """Until the group has committed ``records`` records over all partitions."""
    partitions = list(range(settings.topic_partitions))
    deadline = asyncio.get_running_loop().time() + 120
    async with GroupProgress(bootstrap, settings.consumer_group, settings.events_topic) as group:
        while asyncio.get_running_loop().time() < deadline:
            assert exit_code() is None, "the worker stopped"
            if sum((await group.committed(partitions)).values()) >= records:
                return
            await asyncio.sleep(0.3)
    raise AssertionError(f"the worker did not commit {records} records within 120 s")
