"""Requests generated from the gateway's own OpenAPI document (schemathesis), sent over HTTP
to a real `meterline serve` (gateway, worker and store) with an admin key: whatever they
carry, none is answered with a 5xx, and every refusal is a problem document. Bounded:
``EXAMPLES`` requests per operation, so the run stays well inside the suite's budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.openapi import KEPT_COPY
from meterline.demo import generator
from meterline.demo.job import prepare_store
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import settings_env
from tests.integration.test_serve import wait_for_health

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("METERLINE_FUZZ_EXAMPLES", "100"))
ANSWERED: Counter[int] = Counter()


@pytest.fixture(scope="module")
def served(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(gateway URL, admin key) of a `meterline serve` with a worker on a store of its own."""
    data = tmp_path_factory.mktemp("fuzz")
    unique = uuid.uuid4().hex[:10]
    config = Settings(data_dir=data, clickhouse_database=f"fuzz_{unique}",
                      events_topic=f"usage.events.{unique}", consumer_group=f"fuzz-{unique}",
                      kafka_idempotence=False, gateway_port=free_port(),
                      api_keys_file=data / "keys.json")  # fmt: skip
    month = datetime.now(UTC).date().replace(day=1)
    prepare_store(config, [generator.subscription("acme", "sub-1", "cust-1", "starter", month)])
    key, _ = KeyRing(config.api_keys_path).create("acme", "fuzz", scope="admin")
    server = subprocess.Popen([sys.executable, "-m", "meterline", "serve"],
                              env=settings_env(config, broker.bootstrap_servers),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{config.gateway_port}"
    try:
        wait_for_health(url, server)
        yield url, key
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    total = sum(ANSWERED.values())
    print(f"\nfuzz: {total:,} generated requests, answered {dict(sorted(ANSWERED.items()))}")


def operations() -> list[str]:
    """The labels of the document's operations, read from the kept copy (the test checks
    that the served one is the same), so each is a test of its own."""
    document = schemathesis.openapi.from_path(str(KEPT_COPY))
    return sorted(result.ok().label for result in document.get_all_operations())


@pytest.mark.parametrize("label", operations())
def test_no_generated_request_gets_a_5xx(label: str, served: tuple[str, str]) -> None:
    url, key = served
    document = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operation = document.find_operation_by_label(label)
    assert operation is not None, f"the served document lacks {label}"

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def answered_without_a_5xx(case: Any) -> None:
        # The key is always a good one, so that requests get past it to what they carry.
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}
        response = case.call(base_url=url, timeout=30)
        ANSWERED[response.status_code] += 1
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if label == "POST /v1/events" and response.status_code == 422:
            # Documented: no event accepted, and the answer names why for each one.
            assert response.json()["rejected"], response.text[:500]
        elif label.startswith("POST /api/v1/events") and response.status_code == 422:
            # Documented: Lago's own answer, which Lago's client reads.
            assert response.json()["code"] == "validation_errors", response.text[:500]
        elif label == "POST /v1/billing/meter_events" and response.status_code >= 400:
            # Documented: Stripe's error shape, which Stripe's SDKs read.
            assert {"type", "code", "message"} <= set(response.json()["error"]), response.text
        elif response.status_code >= 400:
            media = response.headers.get("content-type", [""])[0]
            assert media.startswith("application/problem+json"), (
                case.as_curl_command(),
                response.text[:500],
            )
            assert {"title", "status", "detail"} <= set(response.json()), response.text[:500]

    answered_without_a_5xx()


def test_what_the_generator_may_miss_is_refused_with_a_4xx(served: tuple[str, str]) -> None:
    """The inputs found by hand that once got a 5xx: nested JSON, an over-long id, a day
    the store cannot hold."""
    url, key = served
    auth = {"authorization": f"Bearer {key}"}
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    cases = [
        httpx.post(f"{url}/v1/events", content=deep,
                   headers={**auth, "content-type": "application/json"}),
        httpx.post(f"{url}/v1/events", content=b"[" + deep + b"]",
                   headers={**auth, "content-type": "application/json"}),
        httpx.get(f"{url}/v1/usage/{'x' * 10_000}", headers=auth),
        httpx.get(f"{url}/v1/subscriptions/{'x' * 10_000}", headers=auth),
        httpx.post(f"{url}/v1/subscriptions/sub-1/change", headers=auth,
                   json={"plan": "growth", "on": "9999-12-31"}),
        httpx.post(f"{url}/v1/subscriptions/sub-1/cancel", headers=auth,
                   json={"at": "9999-12-31T00:00:00Z"}),
        httpx.post(f"{url}/v1/subscriptions", headers=auth,
                   json={"subscription": "sub-9", "customer": "c", "plan": "starter",
                         "started_at": "9999-01-01"}),
    ]  # fmt: skip
    for answer in cases:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.text[:300])
        assert answer.headers["content-type"].startswith("application/problem+json")
