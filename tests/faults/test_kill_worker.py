"""Kill the Faust worker with SIGKILL at random moments, restart it, and check that nothing
was lost and nothing counted twice: every rated total in ClickHouse equals the Decimal
oracle over the distinct events.

The workload: 200,000 events over 500 subscriptions, about 5% re-sent within the stream
and about 5% more re-sent after each restart (10% duplicates in all), 2% arriving late
(stamped up to 30 days back, so some land in the previous period), and 200 events for
an unknown subscription that must be dead-lettered. Run alone with ``make test-faults``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from aggregation.reconcile import reconcile
from base.events import UsageEvent
from base.kafka_admin import GroupProgress
from base.settings import Settings
from ingest.producer import produce
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker
from meterline.worker_process import WorkerProcess
from rating.loading import load_price_book
from subscriptions.model import Subscription
from tests.expected import expected_totals, print_reconciliation, refused_out_of_order
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 100_000  # six waves of about 16,700 events, five SIGKILLs between them
KILLS = 5
SEED = int(os.environ.get("METERLINE_FAULT_SEED", "20261123"))


def workload(
    subs: list[Subscription], rng: random.Random
) -> tuple[list[UsageEvent], list[UsageEvent]]:
    """(billable events in send order, events for an unknown subscription)."""
    now = datetime.now(UTC)
    period = now.date().replace(day=1)
    stream = list(generator.events(subs, EVENTS, period, duplicate_share=0.05, seed=SEED))
    for position in rng.sample(range(len(stream)), k=len(stream) // 50):
        late = now - timedelta(seconds=rng.randint(86_400, 30 * 86_400))
        stream[position] = msgspec.structs.replace(stream[position], timestamp=late)
    strangers = [
        msgspec.structs.replace(event, id=f"stranger-{n}", subscription="sub-unknown")
        for n, event in enumerate(rng.sample(stream, k=200))
    ]
    return stream, strangers


def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    bootstrap = broker.bootstrap_servers
    book = load_price_book(PRICE_BOOK)
    subs = generator.subscriptions(500, list(book.versions), SEED,
                                   datetime.now(UTC).date().replace(day=1))  # fmt: skip
    prepare_store(settings, subs)
    stream, strangers = workload(subs, rng)
    waves = [stream[start : start + EVENTS // (KILLS + 1)] for start in
             range(0, EVENTS, EVENTS // (KILLS + 1))]  # fmt: skip
    waves[0] = waves[0] + strangers

    sent: list[UsageEvent] = []
    last_offsets: dict[int, int] = {}
    partitions = list(range(settings.topic_partitions))

    def send(events: list[UsageEvent]) -> None:
        offsets = asyncio.run(produce(bootstrap, settings.events_topic, events, batch_events=50))
        for partition, offset in offsets.items():
            last_offsets[partition] = max(offset, last_offsets.get(partition, -1))
        sent.extend(events)

    async def committed_records() -> int:
        async with GroupProgress(bootstrap, settings.consumer_group, settings.events_topic) as g:
            return sum((await g.committed(partitions)).values())

    async def kill_mid_wave(before: int, after: int) -> None:
        """SIGKILL once the worker has committed a random share of the wave's records: it
        is then busy with the rest, and batches it wrote are not all committed yet."""
        target = before + rng.uniform(0.05, 0.8) * (after - before)
        async with GroupProgress(bootstrap, settings.consumer_group, settings.events_topic) as g:
            while sum((await g.committed(partitions)).values()) < target:
                assert worker.exit_code() is None, worker.log_tail()
                await asyncio.sleep(0.02)
        worker.kill()

    worker = WorkerProcess(settings, bootstrap, tmp_path / "worker.log")
    worker.start()
    kills = 0
    try:
        for number, wave in enumerate(waves):
            before = asyncio.run(committed_records())
            send(wave)
            if number == len(waves) - 1:
                break
            asyncio.run(kill_mid_wave(before, sum(o + 1 for o in last_offsets.values())))
            kills += 1
            worker.start()
            send(rng.sample(sent, k=len(sent) // 20 // (number + 1)))  # re-sent after a restart
        asyncio.run(
            wait_until_consumed(settings, bootstrap, last_offsets, worker.exit_code, lambda _: None)
        )
    finally:
        exit_code = worker.stop()
    assert exit_code == 0, worker.log_tail()

    billable = [event for event in sent if event.subscription != "sub-unknown"]
    distinct = generator.distinct(billable)
    plan_of = {sub.subscription: sub.plan for sub in subs}
    expected = expected_totals(book, plan_of, distinct)
    store = Stores.open(settings)
    try:
        periods = {key[2] for key in expected}
        rows = [row for period in sorted(periods) for row in store.reads.rated_totals(period)]
        stored_events, rejected = (
            store.connection.count("events"),
            store.connection.count("rejected_events"),
        )
        found = reconcile(store.reads)
        reasons = store.reads.rejections_by_reason()
    finally:
        store.close()
    billed = {
        (row.subscription, row.meter, row.period_start, row.plan_version,
         row.group): (
            row.quantity, row.amount,
        )
        for row in rows
    }  # fmt: skip
    print(
        f"\nseed {SEED}: {kills} SIGKILLs; sent {len(sent):,}; duplicates "
        f"{len(billable) - len(distinct):,}; rejected {rejected:,}; billed {stored_events:,} "
        f"distinct events in {len(rows):,} rated totals over {len(periods)} periods"
    )
    print_reconciliation(found)
    print(f"  rejected by reason: {reasons}")
    assert found.holds, found.first_failure()
    assert kills >= KILLS
    assert len(sent) >= EVENTS
    # Each send of a stranger is dead-lettered, and each of a disk report stamped before
    # one its total counted already (the workload stamps some events days back).
    out_of_order, never_billed = refused_out_of_order(book, plan_of, billable)
    assert out_of_order > 0
    assert rejected == len(sent) - len(billable) + out_of_order
    assert stored_events == len(distinct) - len(never_billed)
    assert billed == expected
