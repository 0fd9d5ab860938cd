"""A worker killed between a batch's writes leaves the batch's billed events stored (and so
their dedupe marks) without their totals. If the log then turns out to be new (the broker
lost it), those records are never read again and the producer's resends look like
duplicates: the next worker must complete the batch from the store before it reads on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation.aggregator import Aggregator
from aggregation.log_identity import Checkpoint, ordinal
from aggregation.model import BatchResult, Record
from base.events import UsageEvent, encode, partition_of
from base.kafka_admin import ensure_topic
from base.settings import Settings
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store
from meterline.embedded_broker import EmbeddedBroker
from rating.loading import load_price_book
from tests.stores import Stores, aggregator

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def test_a_batch_cut_short_before_its_totals_is_completed_when_a_new_log_follows(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    bootstrap = broker.bootstrap_servers
    asyncio.run(ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions))
    month = NOW.date().replace(day=1)
    prepare_store(settings, [generator.subscription("demo", "sub-1", "c-1", "starter", month)])
    book = load_price_book(PRICE_BOOK)
    home = partition_of(b"demo/sub-1", settings.topic_partitions)
    events = [UsageEvent(f"e{n}", "demo", "sub-1", "api_calls", n + 1,
                         NOW - timedelta(minutes=5), "svc") for n in range(20)]  # fmt: skip
    durable, cut_short = events[:10], events[10:]
    stores = Stores.open(settings)

    def worker() -> Aggregator:
        return aggregator(stores, settings, book, home)

    try:
        before = worker()
        asyncio.run(before.prepare(bootstrap))
        first = [Record(home, n, encode(e)) for n, e in enumerate(durable)]
        before.handle(first, [Checkpoint(home, 0, len(durable) - 1, b"\x01" * 16)])
        batch = before.processor.process(
            [Record(home, len(durable) + n, encode(e)) for n, e in enumerate(cut_short)]
        )
        # The kill: the batch's events are stored, its totals and checkpoint are not.
        stores.sink.write_batch(BatchResult(accepted=batch.accepted))

        after = worker()  # the broker holds none of those records: a new log
        assert asyncio.run(after.prepare(bootstrap)) == {home}
        resent = after.handle(
            [Record(home, ordinal(1, n), encode(e)) for n, e in enumerate(cut_short)], []
        )
        assert resent.duplicates == len(cut_short) and not resent.accepted
        (total,) = [row for row in stores.reads.rated_totals(month, tenant="demo")
                    if row.meter == "api_calls"]  # fmt: skip
        assert total.quantity == sum(e.quantity for e in events)
        assert stores.connection.count("events") == len(events)
    finally:
        stores.close()
