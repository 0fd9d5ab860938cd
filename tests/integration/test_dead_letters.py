"""Events that cannot be billed go to the dead-letter topic with a machine-readable reason,
never stop the worker, and never hold back the good events around them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation.dead_letters import decode_dead_letter
from aggregation.reconcile import reconcile
from base.events import UsageEvent, encode, encode_batch, partition_of
from base.kafka_admin import ensure_topic
from base.settings import Settings
from ingest.producer import produce
from meterline.demo import generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker
from meterline.worker_process import WorkerProcess
from tests.integration.kafka_helpers import read_records, send_raw
from tests.stores import Stores

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def usage(event_id: str, **changes: object) -> UsageEvent:
    fields: dict[str, object] = {
        "id": event_id, "tenant": "demo", "subscription": "sub-1", "meter": "api_calls",
        "quantity": 3, "timestamp": NOW - timedelta(minutes=1), "source": "svc",
    }  # fmt: skip
    fields.update(changes)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def test_bad_events_are_dead_lettered_with_reasons_and_good_ones_billed(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    bootstrap = broker.bootstrap_servers
    prepare_store(
        settings,
        [generator.subscription("demo", "sub-1", "cust-1", "starter", NOW.date().replace(day=1))],
    )
    good = [usage("g1"), usage("g2")]
    bad_events = [
        usage("b1", subscription="nobody"),
        usage("b2", meter="gpu_hours"),
        usage("b3", quantity=-1),
        usage("b4", timestamp=NOW - timedelta(days=40)),
        usage("b5", timestamp=NOW + timedelta(hours=1)),
    ]
    mixed_batch = encode_batch([usage("g3"), usage("g4")])[:-1] + b',{"id": 1}]'
    home = partition_of(b"demo/sub-1", settings.topic_partitions)
    raw = [
        (0, b"not json at all"),
        (home, mixed_batch),
        # Not its partition: forwarded to it (as from a producer with another partitioner).
        ((home + 1) % settings.topic_partitions, encode(usage("g5"))),
    ]

    async def send() -> dict[int, int]:
        for name in (settings.events_topic, settings.dead_letter_topic):
            await ensure_topic(bootstrap, name, settings.topic_partitions)
        await send_raw(bootstrap, settings.events_topic, raw)
        return await produce(bootstrap, settings.events_topic, good + bad_events, batch_events=1)

    last_offsets = asyncio.run(send())
    worker = WorkerProcess(settings, bootstrap, tmp_path / "worker.log")
    worker.start()
    try:
        # The forwarded copy is one record more on the home partition, after all the others.
        with_copy = {**last_offsets, home: last_offsets[home] + 1}
        asyncio.run(
            wait_until_consumed(settings, bootstrap, with_copy, worker.exit_code, lambda _: None)
        )
        # The raw records may sit on partitions the produced ones do not: wait for all 7
        # (asking for more than there are waits out the whole timeout).
        letters = [
            decode_dead_letter(record.value)
            for record in asyncio.run(
                read_records(bootstrap, settings.dead_letter_topic, settings.topic_partitions, 7)
            )
        ]
    finally:
        assert worker.stop() == 0, worker.log_tail()

    reasons = sorted(letter.reason for letter in letters)
    assert reasons == sorted([
        "unknown_subscription", "unpriced_meter", "negative_quantity", "too_old", "in_future",
        "malformed", "malformed",
    ])  # fmt: skip
    batch_letter = next(x for x in letters if x.reason == "malformed" and x.index == 2)
    assert batch_letter.event == '{"id": 1}'
    assert all(letter.topic == settings.events_topic for letter in letters)
    store = Stores.open(settings)
    try:
        assert store.connection.count("events") == 5  # g1 to g5, g5 on its own partition
        assert store.connection.count("rejected_events") == 7
        assert store.connection.count("forwarded_events") == 1
        found = reconcile(store.reads)
        assert found.holds, found.first_failure()
        totals = [sum(getattr(m, kind) for m in found.months)
                  for kind in ("billed", "dead_lettered", "forwarded")]  # fmt: skip
        assert totals == [5, 7, 1]
    finally:
        store.close()
