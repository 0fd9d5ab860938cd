"""The subscriptions topic on the real broker: a change published there reaches a running
worker within seconds, without the worker reading the store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from base.events import UsageEvent
from base.settings import Settings
from ingest.producer import produce
from meterline.cli import main
from meterline.demo import generator
from meterline.demo.job import prepare_store
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import WorkerProcess
from rating.period import midnight
from subscriptions.directory import SubscriptionDirectory
from subscriptions.feed import follow, publish
from subscriptions.model import Subscription, Terms
from tests.stores import Stores

pytestmark = pytest.mark.integration

ENDS = datetime.now(UTC) - timedelta(hours=1)
CHANGES = ((midnight(ENDS.date()), "growth"),)
START = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_worker_follows_every_row_published_and_keeps_the_newest(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    topic = settings_factory(tmp_path).subscriptions_topic + ".unit"
    directory = SubscriptionDirectory(lambda _: [], min_interval=3600, refresh_interval=3600)

    async def scenario() -> None:
        await publish(broker.bootstrap_servers, topic, [
            Subscription("t", "s1", "c1", "growth", START, version=5),
            Subscription("t", "s1", "c1", "starter", START, version=3),  # older, late: ignored
            Subscription("t", "s2", "c2", "scale", START, ENDS, CHANGES, version=4),
        ])  # fmt: skip
        task = asyncio.create_task(follow(broker.bootstrap_servers, topic, directory.absorb))
        try:
            for _ in range(100):
                if directory.entry(("t", "s2")) is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert directory.entry(("t", "s1")) == Terms("growth", None, 5)
    assert directory.entry(("t", "s2")) == Terms(
        "scale", ENDS, 4, ((midnight(ENDS.date()), "growth"),)
    )


def test_a_cancellation_published_on_the_topic_reaches_a_running_worker_in_seconds(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(
        tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers, worker_web_port=free_port()
    )
    period = datetime.now(UTC).date().replace(day=1)
    (sub,) = generator.subscriptions(1, ["starter"], seed=1, period=period)
    prepare_store(settings, [sub])
    worker = WorkerProcess(settings, broker.bootstrap_servers, tmp_path / "worker.log")
    worker.start()
    try:
        probes = 0

        def probe() -> None:
            nonlocal probes
            probes += 1
            event = UsageEvent(id=f"probe-{probes}", tenant=sub.tenant,
                               subscription=sub.subscription, meter="api_calls", quantity=1,
                               timestamp=datetime.now(UTC))  # fmt: skip
            asyncio.run(produce(broker.bootstrap_servers, settings.events_topic, [event]))

        probe()  # billed: the worker is up once it has counted it
        deadline = time.monotonic() + 60
        while counted(settings, "meterline_events_aggregated_total") == 0:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        ended = Subscription(
            sub.tenant, sub.subscription, sub.customer, sub.plan, START, ENDS, version=2**62
        )  # newer than any version the store holds
        asyncio.run(publish(broker.bootstrap_servers, settings.subscriptions_topic, [ended]))
        published = time.monotonic()
        while counted(settings, "meterline_events_rejected_total", "subscription_ended") == 0:
            assert time.monotonic() - published < 30, worker.log_tail()
            probe()
            time.sleep(0.2)
        print(f"\nthe worker refused usage after the end {time.monotonic() - published:.1f} s "
              f"after the cancellation was published")  # fmt: skip
    finally:
        worker.stop()


def counted(settings: Settings, name: str, reason: str | None = None) -> float:
    """A counter of the worker's /metrics (with that reason label), 0 while it starts."""
    try:
        text = httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and (reason is None or sample.labels.get("reason") == reason)
    )


def test_the_subscription_commands_publish_what_they_store(
    broker: EmbeddedBroker,
    store_environment: Stores,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    topic = f"subscriptions.{store_environment.database}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("METERLINE_SUBSCRIPTIONS_TOPIC", topic)
    subs = tmp_path / "subs.csv"
    subs.write_text("tenant,subscription,customer,plan,started_at\nacme,s1,c1,growth,2026-08-01\n")
    runner = CliRunner()
    assert runner.invoke(main, ["subscriptions", "import", str(subs)]).exit_code == 0
    cancelled = runner.invoke(main, ["subscriptions", "cancel", "s1", "--tenant", "acme"])
    assert cancelled.exit_code == 0, cancelled.output
    stored = store_environment.subscriptions.subscription("acme", "s1")
    assert stored is not None and stored.ended_at is not None

    directory = SubscriptionDirectory(lambda _: [], min_interval=3600, refresh_interval=3600)

    async def read_topic() -> None:
        task = asyncio.create_task(follow(broker.bootstrap_servers, topic, directory.absorb))
        for _ in range(100):
            found = directory.entry(("acme", "s1"))
            if found is not None and found.ended_at is not None:
                break
            await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(read_topic())
    found = directory.entry(("acme", "s1"))
    assert found is not None and (found.plan, found.ended_at) == ("growth", stored.ended_at)
