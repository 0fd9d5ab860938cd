"""The SDK against a real gateway (uvicorn, real broker) and straight to Kafka: it batches,
retries through 429s with the same ids, reports refused events, flushes at exit, and
gives up on an unreachable gateway only by reporting every event it holds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from base.kafka_admin import ensure_topic
from base.settings import Settings
from ingest.client import AsyncUsageClient, UsageClient
from ingest.wire import Refusal
from meterline.cli_support import load_book
from meterline.embedded_broker import EmbeddedBroker, free_port
from tests.integration.gateway_helpers import Served, serve

pytestmark = pytest.mark.integration


def test_recorded_events_arrive_once_each_in_batches(served: Served) -> None:
    with UsageClient(served.url, served.key, source="svc", batch_size=500) as usage:
        ids = [usage.record(f"sub-{i % 13}", "api_calls", 1) for i in range(1_200)]
        ids.append(usage.record("sub-1", "tokens", "2.5e3", properties={"model": "large"}))
    assert usage.delivered == 1_201
    events = served.topic_events(len(ids))
    assert sorted(e.id for e in events) == sorted(ids)
    tokens = next(e for e in events if e.meter == "tokens")
    assert (tokens.quantity, tokens.properties, tokens.source) == (2500, {"model": "large"}, "svc")


def test_refused_events_are_reported_to_the_caller(served: Served) -> None:
    refused: list[tuple[str, str | None]] = []

    def note(refusal: Refusal, event: bytes) -> None:
        refused.append((refusal.reason, msgspec.json.decode(event)["meter"]))

    with UsageClient(served.url, served.key, on_rejected=note) as usage:
        usage.record("sub-1", "api_calls", 1)
        usage.record("sub-1", "gpu_hours", 1)
        usage.record("sub-1", "api_calls", -4)
    assert sorted(refused) == [("negative_quantity", "api_calls"), ("unknown_meter", "gpu_hours")]
    assert usage.delivered == 1


def test_a_rate_limited_client_retries_until_everything_is_accepted(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    refused: list[Refusal] = []
    for served in serve(broker, settings_factory, tmp_path,
                        tenant_events_per_second=400, tenant_burst_events=500):  # fmt: skip
        with UsageClient(served.url, served.key, batch_size=500,
                         on_rejected=lambda r, _: refused.append(r)) as usage:  # fmt: skip
            ids = [usage.record("sub-1", "api_calls", 1) for _ in range(1_500)]
        assert refused == []
        assert sorted(e.id for e in served.topic_events(len(ids))) == sorted(ids)


def test_an_unreachable_gateway_hands_back_every_event_as_undelivered() -> None:
    reasons: list[str] = []
    with UsageClient(f"http://127.0.0.1:{free_port()}", "mlk_x", give_up_after=0.5,
                     on_rejected=lambda r, _: reasons.append(r.reason)) as usage:  # fmt: skip
        for _ in range(3):
            usage.record("sub-1", "api_calls", 1)
    assert reasons == ["undelivered"] * 3


def test_the_client_flushes_at_exit_without_being_closed(served: Served) -> None:
    script = textwrap.dedent(f"""
        from ingest.client import UsageClient
        usage = UsageClient({served.url!r}, {served.key!r}, flush_interval=60)
        for i in range(25):
            usage.record("sub-1", "api_calls", 1, event_id=f"exit-{{i}}")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sorted(e.id for e in served.topic_events(25)) == sorted(f"exit-{i}" for i in range(25))


def test_kafka_mode_checks_events_and_sends_them_to_the_topic(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    asyncio.run(ensure_topic(broker.bootstrap_servers, settings.events_topic, 4))
    refused: list[str] = []

    async def send() -> list[str]:
        async with AsyncUsageClient.kafka(
            settings, broker.bootstrap_servers, "acme", load_book(settings),
            on_rejected=lambda r, _: refused.append(r.reason),
        ) as usage:  # fmt: skip
            ids = [await usage.record(f"sub-{i}", "api_calls", 1) for i in range(50)]
            await usage.record("sub-1", "api_calls", 1, timestamp=datetime(2020, 1, 1, tzinfo=UTC))
        return ids

    ids = asyncio.run(send())
    assert refused == ["too_old"]
    served = Served(settings, "", "")
    assert sorted(e.id for e in served.topic_events(50)) == sorted(ids)
