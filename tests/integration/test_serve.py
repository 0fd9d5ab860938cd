"""End to end through `meterline serve`: events sent with the SDK to the gateway, some of
them twice, are aggregated and rated by the worker it runs, and each distinct event is
billed exactly once, at the price the Decimal oracle gives."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from base.events import UsageEvent, decode_record
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.client import UsageClient
from meterline.cli_support import load_book
from meterline.demo import generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import settings_env
from tests.expected import expected_totals
from tests.integration.kafka_helpers import read_records
from tests.stores import Stores

pytestmark = pytest.mark.integration

PLANS = {"sub-1": "starter", "sub-2": "growth", "sub-3": "scale"}


def test_events_sent_through_the_gateway_are_billed_once_each(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, gateway_port=free_port(), worker_web_port=free_port(),
                                api_keys_file=tmp_path / "keys.json")  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.date().replace(day=1)
    prepare_store(
        settings,
        [
            generator.subscription("acme", sub, f"cust-{sub}", plan, month)
            for sub, plan in PLANS.items()
        ],
    )
    key, _ = KeyRing(settings.api_keys_path).create("acme", "e2e")
    env = settings_env(settings, broker.bootstrap_servers)
    server = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        wait_for_health(url, server)
        rng = random.Random(5)
        sent = []
        with UsageClient(url, key, source="e2e") as usage:
            for number in range(600):
                subscription = rng.choice(list(PLANS))
                meter, quantity = rng.choice([("api_calls", rng.randint(1, 900)),
                                              ("tokens", rng.randint(1, 5000))])  # fmt: skip
                at = max(now.replace(day=1), now - timedelta(minutes=rng.randint(1, 600)))
                model = {"model": rng.choice(["small", "large"])}
                usage.record(subscription, meter, quantity, event_id=f"e{number}",
                             timestamp=at, properties=model)  # fmt: skip
                sent.append(UsageEvent(f"e{number}", "acme", subscription, meter, quantity, at,
                                       "e2e", model))  # fmt: skip
            for event in rng.sample(sent, 60):
                usage.record(event.subscription, event.meter, event.quantity,
                             event_id=event.id, timestamp=event.timestamp)  # fmt: skip
            usage.record("sub-404", "api_calls", 1)  # the worker dead-letters it
            usage.record("sub-1", "gpu_hours", 1)  # the gateway refuses it
        records = asyncio.run(
            read_records(broker.bootstrap_servers, settings.events_topic,
                         settings.topic_partitions, 661,
                         weight=lambda value: len(decode_record(value)))
        )  # fmt: skip
        assert sum(len(decode_record(r.value)) for r in records) == 661
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        asyncio.run(wait_until_consumed(settings, broker.bootstrap_servers, last,
                                        server.poll, lambda done: None))  # fmt: skip
        period = now.strftime("%Y-%m")
        through_api = {
            sub: httpx.get(f"{url}/v1/usage/{sub}", params={"period": period},
                           headers={"authorization": f"Bearer {key}"}).json()
            for sub in PLANS
        }  # fmt: skip
        other_key, _ = KeyRing(settings.api_keys_path).create("globex", "e2e")
        as_other = httpx.get(
            f"{url}/v1/usage/sub-1", headers={"authorization": f"Bearer {other_key}"}
        )
        assert as_other.status_code == 200 and as_other.json()["lines"] == [], (
            "another tenant's key reads its own (empty) usage, never acme's"
        )
        assert httpx.get(f"{url}/v1/usage/sub-1").status_code == 401
        bad_period = httpx.get(f"{url}/v1/usage/sub-1", params={"period": "May"},
                               headers={"authorization": f"Bearer {key}"})  # fmt: skip
        assert bad_period.status_code == 400
        health = httpx.get(f"{url}/v1/health")
        assert (health.status_code, health.json()["kafka"], health.json()["store"]) == (
            200,
            "ok",
            "ok",
        ), health.text
        worker_health = httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/health").json()
        assert worker_health["partitions"] == [0, 1, 2, 3] and worker_health["store"] == "ok"
        internal = f"http://127.0.0.1:{settings.worker_web_port}"
        for asked in (httpx.get(f"{internal}/usage/acme/sub-1/{period}"),
                      httpx.get(f"{internal}/usage/acme/sub-1/{period}",
                                headers={"authorization": "Bearer guessed"}),
                      httpx.post(f"{internal}/registry", content=b"{}")):  # fmt: skip
            assert asked.status_code == 401, "the worker's internal pages want serve's secret"
        assert_counters(f"{url}/metrics", {
            ("meterline_events_received_total", ()): 662,
            ("meterline_events_accepted_total", (("tenant", "acme"),)): 661,
            ("meterline_events_refused_total", (("reason", "unknown_meter"),)): 1,
        })  # fmt: skip
        assert_counters(f"http://127.0.0.1:{settings.worker_web_port}/metrics", {
            ("meterline_events_consumed_total", ()): 661,
            ("meterline_events_aggregated_total", ()): 600,
            ("meterline_events_deduplicated_total", ()): 60,
            ("meterline_events_rejected_total", (("reason", "unknown_subscription"),)): 1,
            ("meterline_store_rows_written_total", (("table", "events"),)): 600,
        })  # fmt: skip
        cancel_over_http_then_see_usage_refused(url, settings)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode(errors="replace")
    assert server.returncode == 0, output

    store = Stores.open(settings)
    try:
        rows = store.reads.rated_totals(now.date().replace(day=1), tenant="acme")
    finally:
        store.close()
    billed = {
        (row.subscription, row.meter, row.plan_version, row.group):
            (row.quantity, row.amount)
        for row in rows
    }  # fmt: skip
    expected = {
        (subscription, meter, version, group): total
        for (subscription, meter, _, version, group), total in expected_totals(
            load_book(settings), PLANS, sent
        ).items()
    }
    assert billed == expected
    for subscription, answer in through_api.items():
        assert answer["subscription"] == subscription
        shown = {
            (line["meter"], line["plan_version"], compact_json(line["group"])): (
                Decimal(line["quantity"]),
                Decimal(line["amount"]),
            )
            for line in answer["lines"]
        }
        stored = {
            (meter, version, group): (Decimal(q), amount)
            for (sub, meter, version, group), (q, amount) in billed.items()
            if sub == subscription
        }
        assert shown == stored and shown


def cancel_over_http_then_see_usage_refused(url: str, settings: Settings) -> None:
    """In embedded mode the worker owns chDB: the gateway forwards the change to it, and
    the worker refuses usage stamped after the end from the next event on."""
    admin, _ = KeyRing(settings.api_keys_path).create("acme", "ops", scope="admin")
    headers = {"authorization": f"Bearer {admin}"}
    listed = httpx.get(f"{url}/v1/subscriptions", headers=headers)
    assert listed.status_code == 200 and listed.json()["total"] == 3, listed.text
    ended = httpx.post(f"{url}/v1/subscriptions/sub-3/cancel", json={}, headers=headers)
    assert ended.status_code == 200 and ended.json()["ended_at"], ended.text
    history = httpx.get(f"{url}/v1/subscriptions/sub-3", headers=headers).json()["history"]
    assert [entry["change"] for entry in history][-1] == "cancelled"
    again = httpx.post(f"{url}/v1/subscriptions/sub-3/cancel", json={}, headers=headers)
    assert again.status_code == 422 and "already ends" in again.json()["detail"]
    # A customer's portal is answered by the worker too, through the gateway.
    made = httpx.post(f"{url}/v1/customers/cust-sub-1/portal-link", json={}, headers=headers)
    assert made.status_code == 201, made.text
    page = httpx.get(made.json()["url"])
    assert page.status_code == 200 and "Usage of sub-1 this period" in page.text, page.text
    # A correction goes to the worker too: none of sub-1's events is in a closed period.
    asked = {"reason": "check", "subscription": "sub-1", "until": "2020-01-01T00:00:00Z"}
    nothing = httpx.post(f"{url}/v1/corrections/retract", json=asked, headers=headers)
    assert nothing.status_code == 200 and nothing.json()["status"] == "nothing to change", (
        nothing.text
    )
    key, _ = KeyRing(settings.api_keys_path).create("acme", "late")
    with UsageClient(url, key, source="e2e") as usage:
        usage.record("sub-3", "api_calls", 5, event_id="after-the-end")
    worker = f"http://127.0.0.1:{settings.worker_web_port}/metrics"
    ended: Sample = ("meterline_events_rejected_total", (("reason", "subscription_ended"),))
    deadline = time.monotonic() + 30
    while scrape(worker).get(ended) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scrape(worker).get(ended) == 1


Sample = tuple[str, tuple[tuple[str, str], ...]]  # name, sorted labels


def scrape(url: str) -> dict[Sample, float]:
    """The counters ``url`` exposes."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(url).text)
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def assert_counters(url: str, expected: dict[Sample, float]) -> None:
    """The counters scraped from ``url`` have the expected values."""
    scraped = scrape(url)
    assert {name: scraped.get(name) for name in expected} == expected


def compact_json(group: dict[str, object] | None) -> str:
    """A group as the store keys it: compact JSON, or "" for none."""
    return json.dumps(group, separators=(",", ":")) if group else ""


def wait_for_health(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.communicate()[0] or b"(its output was not kept)"
            raise AssertionError(f"serve exited with {server.returncode}: "
                                 + output.decode(errors="replace"))  # fmt: skip
        try:
            if httpx.get(f"{url}/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("meterline serve did not answer /v1/health within 60 s")
