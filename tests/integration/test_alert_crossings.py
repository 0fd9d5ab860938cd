"""Alerts and entitlements over the real store and broker, a worker at a time: a crossing
written before its batch's totals is found again, with the same id, when a worker killed
between the two writes is replaced; a worker that takes the partition over later finds
no crossing at all, and answers entitlements from the usage it restored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregation.aggregator import Aggregator
from aggregation.alert_store import AlertStore
from aggregation.alerts import crossings
from aggregation.log_identity import Checkpoint
from aggregation.model import Record
from base.events import UsageEvent, encode, partition_of
from base.kafka_admin import ensure_topic
from base.settings import Settings
from meterline.cli import main
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store
from meterline.embedded_broker import EmbeddedBroker
from rating.loading import load_price_book
from tests.stores import Stores, aggregator

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize("cut_at", ["alert_crossings", "events", "rated_usage"])
def test_a_crossing_is_found_once_whatever_survived_of_its_batch(
    cut_at: str,
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    bootstrap = broker.bootstrap_servers
    asyncio.run(ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions))
    month = NOW.date().replace(day=1)
    prepare_store(settings, [generator.subscription("demo", "sub-1", "c-1", "starter", month)])
    monkeypatch.setenv("METERLINE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("METERLINE_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    said = CliRunner().invoke(main, ["alerts", "add", "--tenant", "demo", "--id", "calls-80k",
                                     "--subscription", "sub-1", "--metric", "quantity",
                                     "--meter", "api_calls", "--threshold", "80000"])  # fmt: skip
    assert said.exit_code == 0, said.output
    book = load_price_book(PRICE_BOOK)  # starter: api_calls hard-limited at 100,000
    home = partition_of(b"demo/sub-1", settings.topic_partitions)
    stamp = NOW - timedelta(minutes=5)
    events = [UsageEvent(f"e{n}", "demo", "sub-1", "api_calls", 30_000, stamp, "svc")
              for n in range(4)]  # fmt: skip
    records = [Record(home, n, encode(e)) for n, e in enumerate(events)]
    stores = Stores.open(settings)

    def worker() -> Aggregator:
        made = aggregator(stores, settings, book, home)
        asyncio.run(made.prepare(bootstrap))
        return made

    def checkpoint(last: int) -> list[Checkpoint]:
        return [Checkpoint(home, 0, last, bytes([last + 1]) * 16)]

    try:
        first = worker()
        assert not first.handle(records[:2], checkpoint(1)).crossings  # 60,000
        # The kill: the batch that takes the total to 90,000 is cut short at one of its
        # writes (``cut_at``): before its crossing, after it but before its events, or
        # before its totals.
        cut = first.processor.process(records[2:3])
        found = crossings(first.alerts, first.live, cut.rated, book, datetime.now(UTC))
        assert [c.rule for c in found] == ["calls-80k"]
        cut.crossings = found
        insert = stores.sink._client.insert_arrow

        def killed(table: str, data: object) -> object:
            if table.endswith(f".{cut_at}"):
                raise ConnectionError("killed")
            return insert(table, data)

        monkeypatch.setattr(stores.sink._client, "insert_arrow", killed)
        with pytest.raises(ConnectionError):
            stores.sink.write_batch(cut, settings.events_topic, checkpoint(2))
        monkeypatch.setattr(stores.sink._client, "insert_arrow", insert)

        # The next worker reads the batch again. Events stored had their totals completed
        # from the store (their crossing was stored before them): no crossing again.
        # Without them, the batch is judged again from 60,000 and finds the same crossing,
        # which the store keeps once.
        second = worker()
        restored = second.live.meter(("demo", "sub-1"), month, "api_calls", "sum").quantity
        events_stored = cut_at == "rated_usage"
        assert restored == (90_000 if events_stored else 60_000)
        again = second.handle(records[2:3], checkpoint(2)).crossings
        assert [c.id for c in again] == ([] if events_stored else [found[0].id])
        third = worker()  # and once everything is durable, the same records are none either
        assert third.handle(records[2:4], checkpoint(3)).crossings == []
        (kept,) = AlertStore(stores.connection).crossings("demo")
        assert kept.id == found[0].id and kept.value == 90_000

        answer = third.balances.answer(("demo", "sub-1"), "api")
        assert answer is not None
        (api,) = answer.features
        assert (api.usage, api.limit, api.has_access) == ("120000", "100000", False)
        assert list(third.balances.denied) == [("demo", "sub-1")]
        assert (
            "hard limit of meter 'api_calls'" in third.balances.denied["demo", "sub-1"]["api_calls"]
        )
    finally:
        stores.close()

    listed = CliRunner().invoke(main, ["alerts", "list", "--tenant", "demo", "--format", "json"])
    assert [r["id"] for r in json.loads(listed.output)] == ["calls-80k"]
    shown = CliRunner().invoke(main, ["entitlements", "sub-1", "--tenant", "demo",
                                      "--format", "json"])  # fmt: skip
    rows = {r["feature"]: r for r in json.loads(shown.output)}
    assert rows["api"]["access"] == "no" and rows["api"]["usage"] == "120000"
    assert rows["sso"]["access"] == "no" and rows["support"]["access"] == "yes"
