"""The peers' own clients, unchanged but for their base URL and key, against a real
gateway (uvicorn, the session's broker): CloudEvents' SDK in binary and structured mode,
OpenMeter's SDK, Lago's client and Stripe's SDK. What each sends is read back off the topic and run
through the real batch step: every accepted event is billed once, and a resend of the
same id is not billed again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import stripe
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from lago_python_client.client import Client as LagoClient
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BatchEvent
from lago_python_client.models import Event as LagoEvent
from openmeter import Client as OpenMeterClient
from openmeter.models import Event as OpenMeterEvent

from aggregation.batch import BatchProcessor
from aggregation.model import BatchResult, Record
from aggregation.state import UsageState
from base.events import UsageEvent, decode_record
from base.settings import Settings
from ingest.api_keys import ADMIN, KeyRing
from meterline.cli_support import load_book
from meterline.demo import generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import settings_env
from rating.table import ChargeTable
from subscriptions.directory import fixed
from subscriptions.model import Terms
from tests.expected import expected_totals
from tests.integration.gateway_helpers import Served
from tests.integration.kafka_helpers import read_records
from tests.integration.test_serve import wait_for_health

pytestmark = pytest.mark.integration


def billed(served: Served, events: int) -> BatchResult:
    """The topic's records (``events`` of them expected) through the real batch step, every
    subscription of tenant acme on the starter plan."""
    settings = served.settings
    records = asyncio.run(
        read_records(settings.kafka_bootstrap_servers or "", settings.events_topic,
                     settings.topic_partitions, events, timeout=20,
                     weight=lambda value: len(decode_record(value)))
    )  # fmt: skip
    book = load_book(settings)
    terms = {("acme", f"sub-{n}"): Terms("starter", None, 1) for n in range(10)}
    step = BatchProcessor(
        UsageState(), fixed(terms), book, ChargeTable.compile(book),
        window=settings.event_window(), partitions=settings.topic_partitions,
    )  # fmt: skip
    return step.process([Record(r.partition, r.offset, r.value) for r in records])


def quantities(result: BatchResult) -> dict[str, int]:
    return {a.event.id: a.event.quantity for a in result.accepted}


def test_cloudevents_sdk_in_binary_and_structured_mode_is_billed_once_per_id(
    served: Served,
) -> None:
    auth = {"authorization": f"Bearer {served.key}"}

    def event(event_id: str, quantity: int) -> CloudEvent:
        return CloudEvent({"id": event_id, "source": "svc", "type": "api_calls",
                           "subject": "sub-1"}, {"quantity": quantity})  # fmt: skip

    with httpx.Client(base_url=served.url) as http:
        for mode in (to_binary, to_structured):
            headers, body = mode(event(f"e-{mode.__name__}", 5))
            answer = http.post("/v1/events", headers={**headers, **auth}, content=body)
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"accepted": 1, "rejected": []}
        headers, body = to_binary(event("e-to_binary", 5))  # a resend
        assert http.post("/v1/events", headers={**headers, **auth}, content=body).status_code == 202
        # Binary mode refuses as structured mode does: here, an id of 300 characters.
        headers, body = to_binary(event("x" * 300, 1))
        refused = http.post("/v1/events", headers={**headers, **auth}, content=body)
        assert refused.status_code == 422
        assert [r["reason"] for r in refused.json()["rejected"]] == ["invalid_event"]
        # Binary-mode data that is not JSON is refused as a whole.
        headers, _ = to_binary(event("e-xml", 1))
        xml = http.post("/v1/events", content=b"<q>1</q>",
                        headers={**headers, **auth, "content-type": "application/xml"})  # fmt: skip
        assert xml.status_code == 400 and "JSON" in xml.json()["detail"]
    result = billed(served, 3)
    assert quantities(result) == {"e-to_binary": 5, "e-to_structured": 5}
    assert result.duplicates == 1


def test_openmeters_sdk_ingests_one_event_and_batches_and_is_told_of_refusals(
    served: Served,
) -> None:
    client = OpenMeterClient(endpoint=served.url, token=served.key)

    def event(event_id: str, quantity: int, event_type: str = "api_calls") -> OpenMeterEvent:
        return OpenMeterEvent(id=event_id, source="om", specversion="1.0", type=event_type,
                              subject="sub-2", time=datetime.now(UTC),
                              data={"quantity": quantity})  # fmt: skip

    client.events.ingest_event(event("om-1", 3))  # raises unless it is answered 204
    client.events.ingest_events([event("om-2", 4), event("om-3", 5)])
    client.events.ingest_events_json([event("om-4", 6)])  # CloudEvents sent as plain JSON
    client.events.ingest_event(event("om-1", 3))  # a resend
    with pytest.raises(Exception) as refused:
        client.events.ingest_events([event("om-5", 1), event("om-6", 1, "gpu_seconds")])
    assert getattr(refused.value, "status_code", None) == 400
    client.close()
    result = billed(served, 6)
    assert quantities(result) == {"om-1": 3, "om-2": 4, "om-3": 5, "om-4": 6, "om-5": 1}
    assert result.duplicates == 1


def test_lagos_client_creates_events_and_batches_and_reads_its_answer(served: Served) -> None:
    client = LagoClient(api_key=served.key, api_url=served.url)
    now = int(time.time())

    def event(transaction: str, quantity: object, code: str = "api_calls") -> LagoEvent:
        return LagoEvent(transaction_id=transaction, external_subscription_id="sub-3", code=code,
                         timestamp=now, properties={"quantity": quantity})  # fmt: skip

    answer = client.events.create(event("lago-1", 7))
    assert answer is not None
    assert (answer.transaction_id, answer.external_subscription_id) == ("lago-1", "sub-3")
    assert answer.timestamp.startswith(datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M"))
    client.events.batch_create(BatchEvent(events=[event("lago-2", "2"), event("lago-3", 1)]))
    client.events.create(event("lago-1", 7))  # a resend
    with pytest.raises(LagoApiError) as refused:
        client.events.create(event("lago-4", 1, code="gpu_seconds"))
    assert refused.value.status_code == 422
    result = billed(served, 4)
    assert quantities(result) == {"lago-1": 7, "lago-2": 2, "lago-3": 1}
    assert result.duplicates == 1
    assert {a.event.source for a in result.accepted} == {"lago"}


def test_stripes_sdk_sends_meter_events_billed_to_the_customers_subscription(
    served: Served,
) -> None:
    admin, _ = KeyRing(served.settings.api_keys_path).create("acme", "admin", scope=ADMIN)
    with httpx.Client(base_url=served.url, headers={"authorization": f"Bearer {admin}"}) as http:
        customers = [{"customer": "c-one", "name": "One", "external_id": "cus_ONE"},
                     {"customer": "c-two", "name": "Two"}]  # fmt: skip
        assert http.post("/v1/customers", json=customers).status_code == 201
        rows = [("sub-4", "c-one", None), ("sub-5", "c-two", None), ("sub-6", "c-two", None),
                ("sub-7", "c-one", "2026-01-02")]  # fmt: skip
        subscriptions = [{"subscription": sub, "customer": customer, "plan": "starter",
                          "started_at": "2026-01-01", **({"ended_at": end} if end else {})}
                         for sub, customer, end in rows]  # fmt: skip
        imported = http.post("/v1/subscriptions", json=subscriptions)
        assert imported.status_code == 201, imported.text
    client = stripe.StripeClient(served.key, base_addresses={"api": served.url},
                                 max_network_retries=0)  # fmt: skip
    events = client.v1.billing.meter_events

    def send(
        identifier: str, customer: str, value: str, **payload: str
    ) -> stripe.billing.MeterEvent:
        return events.create({"event_name": "api_calls", "identifier": identifier,
                              "payload": {"stripe_customer_id": customer, "quantity": value,
                                          **payload}})  # fmt: skip

    sent = send("st-1", "cus_ONE", "8")  # by the external id; sub-7 ended long ago
    assert (sent.identifier, sent.payload["quantity"]) == ("st-1", "8")
    send("st-2", "c-two", "2", subscription="sub-6")  # two active: the event names one
    send("st-1", "cus_ONE", "8")  # a resend
    # Without an identifier, the Idempotency-Key is the id: a retry with it counts once.
    for _ in range(2):
        answered = httpx.post(
            f"{served.url}/v1/billing/meter_events",
            content=b"event_name=api_calls&payload[stripe_customer_id]=c-one&payload[quantity]=9",
            headers={"authorization": f"Bearer {served.key}", "idempotency-key": "idem-9",
                     "content-type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert answered.status_code == 200 and answered.json()["identifier"] == "idem-9"
    with pytest.raises(stripe.InvalidRequestError) as ambiguous:
        send("st-3", "c-two", "1")
    assert ambiguous.value.code == "subscription_ambiguous"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        send("st-4", "cus_NOBODY", "1")
    assert unknown.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        send("st-5", "c-one", "-3")
    assert refused.value.code == "negative_quantity"
    result = billed(served, 5)
    assert quantities(result) == {"st-1": 8, "st-2": 2, "idem-9": 9}
    assert {(a.event.subscription, a.event.source) for a in result.accepted} == {
        ("sub-4", "stripe"), ("sub-6", "stripe")}  # fmt: skip
    assert result.duplicates == 2


def test_unknown_routes_and_methods_answer_a_problem_document(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        missing = http.get(f"/v2/{uuid.uuid4().hex}")
        wrong = http.get("/api/v1/events/batch")
    assert missing.status_code == 404 and wrong.status_code == 405
    for answer in (missing, wrong):
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == answer.status_code


def test_each_peer_client_gets_billed_usage_out_of_meterline_serve(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The issue's test of done: each client, unchanged but for its base URL and key,
    sends to `meterline serve` (gateway, worker and store as a user runs them), twice, and
    its subscription's usage shows each event billed once at the oracle's price."""
    settings = settings_factory(tmp_path, gateway_port=free_port(), worker_web_port=free_port(),
                                api_keys_file=tmp_path / "keys.json")  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.date().replace(day=1)
    plans = {f"sub-{n}": "starter" for n in range(1, 5)}
    prepare_store(settings, [generator.subscription("acme", sub, f"cust-{sub}", plan, month)
                             for sub, plan in plans.items()])  # fmt: skip
    key, _ = KeyRing(settings.api_keys_path).create("acme", "peers")
    server = subprocess.Popen([sys.executable, "-m", "meterline", "serve"],
                              env=settings_env(settings, broker.bootstrap_servers),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{settings.gateway_port}"
    sent = [UsageEvent(event_id, "acme", sub, "api_calls", quantity, now, source)
            for event_id, sub, quantity, source in (("ce-1", "sub-1", 3, "svc"),
                                                    ("om-1", "sub-2", 4, "om"),
                                                    ("lago-1", "sub-3", 5, "lago"),
                                                    ("st-1", "sub-4", 6, "stripe"))]  # fmt: skip
    try:
        wait_for_health(url, server)
        for _ in range(2):  # each sent twice: a retry, a replayed job
            headers, body = to_binary(CloudEvent(
                {"id": "ce-1", "source": "svc", "type": "api_calls", "subject": "sub-1",
                 "time": now.isoformat()}, {"quantity": 3}))  # fmt: skip
            answer = httpx.post(f"{url}/v1/events", content=body,
                                headers={**headers, "authorization": f"Bearer {key}"})  # fmt: skip
            assert answer.status_code == 202, answer.text
            OpenMeterClient(endpoint=url, token=key).events.ingest_event(OpenMeterEvent(
                id="om-1", source="om", specversion="1.0", type="api_calls", subject="sub-2",
                time=now, data={"quantity": 4}))  # fmt: skip
            LagoClient(api_key=key, api_url=url).events.create(LagoEvent(
                transaction_id="lago-1", external_subscription_id="sub-3", code="api_calls",
                timestamp=int(now.timestamp()), properties={"quantity": 5}))  # fmt: skip
            stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0).v1.billing\
                .meter_events.create({"event_name": "api_calls", "identifier": "st-1",
                                      "timestamp": int(now.timestamp()),
                                      "payload": {"stripe_customer_id": "cust-sub-4",
                                                  "quantity": "6"}})  # fmt: skip
        records = asyncio.run(
            read_records(broker.bootstrap_servers, settings.events_topic,
                         settings.topic_partitions, 8, weight=lambda v: len(decode_record(v)))
        )  # fmt: skip
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        asyncio.run(wait_until_consumed(settings, broker.bootstrap_servers, last,
                                        server.poll, lambda done: None))  # fmt: skip
        expected = expected_totals(load_book(settings), plans, sent)
        for event in sent:
            usage = httpx.get(f"{url}/v1/usage/{event.subscription}",
                              params={"period": now.strftime("%Y-%m")},
                              headers={"authorization": f"Bearer {key}"}).json()  # fmt: skip
            shown = [(Decimal(line["quantity"]), Decimal(line["amount"]))
                     for line in usage["lines"] if line["meter"] == "api_calls"]  # fmt: skip
            ((quantity, amount),) = [
                total for (sub, meter, *_), total in expected.items()
                if sub == event.subscription and meter == "api_calls"
            ]  # fmt: skip
            assert shown == [(Decimal(quantity), amount)], (event.id, usage)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode(errors="replace")
    assert server.returncode == 0, output
