"""The ingest gateway against the real embedded broker: accepted events are on the topic,
in their subscription's partition; every kind of bad request gets its status and writes
nothing; a fuzzer never gets a 500."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregation.model import BatchResult, RatedRows, RatedTotal
from base.events import decode_record, partition_of
from base.settings import Settings
from ingest.api_keys import KeyRing
from meterline.embedded_broker import EmbeddedBroker
from rating.period import midnight
from subscriptions.feed import decode
from tests.integration.gateway_helpers import gateway_for
from tests.integration.kafka_helpers import read_records
from tests.stores import Stores

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
CLOUD_BATCH = "application/cloudevents-batch+json"


@dataclass
class Running:
    settings: Settings
    runner: asyncio.Runner
    client: httpx.AsyncClient
    key: str
    other_key: str

    def post(self, body: Any, content_type: str = CLOUD_BATCH, key: str | None = None,
             **headers: str) -> httpx.Response:  # fmt: skip
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        headers = {"content-type": content_type, **headers}
        if key != "":
            headers["authorization"] = f"Bearer {key or self.key}"
        return self.runner.run(self.client.post("/v1/events", content=raw, headers=headers))

    def topic_values(self, expected: int) -> list[bytes]:
        records = self.runner.run(
            read_records(
                self.settings.kafka_bootstrap_servers or "",
                self.settings.events_topic,
                self.settings.topic_partitions,
                expected,
                timeout=10,
                weight=lambda value: len(decode_record(value)),
            )
        )
        return [record.value for record in records]


def start_gateway(
    broker: EmbeddedBroker, make: Callable[..., Settings], tmp_path: Path, **overrides: Any
) -> Iterator[Running]:
    gateway, key = gateway_for(broker, make, tmp_path, **overrides)
    other_key, _ = gateway.keys.create("globex", "test")
    with asyncio.Runner() as runner:
        runner.run(gateway.__aenter__())
        transport = httpx.ASGITransport(app=gateway.asgi())
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        try:
            yield Running(gateway.settings, runner, client, key, other_key)
        finally:
            runner.run(client.aclose())
            runner.run(gateway.__aexit__(None, None, None))


@pytest.fixture
def gateway(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> Iterator[Running]:
    yield from start_gateway(broker, settings_factory, tmp_path)


def cloud(event_id: str, subscription: str = "sub-1", **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "specversion": "1.0", "id": event_id, "source": "svc", "type": "api_calls",
        "subject": subscription, "time": (NOW - timedelta(minutes=1)).isoformat(),
        "data": {"quantity": 2},
    }  # fmt: skip
    event.update(changes)
    return event


def test_accepted_events_are_on_the_topic_in_their_subscriptions_partition(
    gateway: Running,
) -> None:
    batch = [cloud(f"e{i}", f"sub-{i % 7}") for i in range(40)] + [cloud("bad", type="nope")]
    response = gateway.post(batch)
    assert response.status_code == 202
    answer = response.json()
    assert answer["accepted"] == 40
    assert [(r["index"], r["id"], r["reason"]) for r in answer["rejected"]] == [
        (40, "bad", "unknown_event_type")
    ]
    values = gateway.topic_values(expected=40)
    assert len(values) <= 4, "one record per partition for the request"
    seen = []
    for value in values:
        events = decode_record(value)
        partitions = {partition_of(e.partition_key(), 4) for e in events}  # type: ignore[union-attr]
        assert len(partitions) == 1
        seen.extend(events)
    assert sorted(e.id for e in seen) == sorted(f"e{i}" for i in range(40))  # type: ignore[union-attr]
    assert {e.tenant for e in seen} == {"acme"}  # type: ignore[union-attr]


def test_plain_json_single_and_batch_are_accepted(gateway: Running) -> None:
    plain = {"id": "p1", "subscription": "sub-1", "meter": "tokens", "quantity": "12",
             "properties": {"model": "large"}}  # fmt: skip
    assert gateway.post(plain, "application/json").json() == {"accepted": 1, "rejected": []}
    assert gateway.post([plain, {**plain, "id": "p2"}], "application/json").status_code == 202
    assert len([e for v in gateway.topic_values(3) for e in decode_record(v)]) == 3


@pytest.mark.parametrize(
    ("body", "content_type", "key", "status"),
    [
        (b"{not json", CLOUD_BATCH, None, 400),
        (b"[]", CLOUD_BATCH, None, 400),
        ([cloud("x")], "text/plain", None, 415),
        ([cloud("x")], "application/cloudevents+json", None, 400),
        ([cloud("x")], CLOUD_BATCH, "", 401),
        ([cloud("x")], CLOUD_BATCH, "mlk_wrong", 401),
        ([cloud("x"), cloud("y", tenant="globex")], CLOUD_BATCH, None, 403),
        ([cloud("x", tenant="acme")], CLOUD_BATCH, "other", 403),
        ([{"id": 1}], CLOUD_BATCH, None, 422),
        ([cloud("x", subject=None)], CLOUD_BATCH, None, 422),
        ([cloud("x", data={"quantity": "1.5"})], CLOUD_BATCH, None, 422),
        ([cloud("x", data={"quantity": -3})], CLOUD_BATCH, None, 422),
        ([cloud("x", time="2020-01-01T00:00:00Z")], CLOUD_BATCH, None, 422),
        ([cloud(str(i)) for i in range(1001)], CLOUD_BATCH, None, 413),
        ([cloud("x", source="s" * 70_000)], CLOUD_BATCH, None, 422),
        (b"[" + b" " * (9 << 20) + b"]", CLOUD_BATCH, None, 413),
    ],
)
def test_bad_requests_get_their_status_and_write_nothing(
    gateway: Running, body: Any, content_type: str, key: str | None, status: int
) -> None:
    response = gateway.post(body, content_type, gateway.other_key if key == "other" else key)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["accepted"] == 0
        assert all(r["reason"] and r["detail"] for r in response.json()["rejected"])
    else:
        problem = response.json()
        assert problem["status"] == status and problem["detail"]
        assert response.headers["content-type"] == "application/problem+json"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    # The sentinel shares the subscription, so the partition: anything written before it
    # would be read first.
    assert gateway.post([cloud("sentinel")]).status_code == 202
    [value] = gateway.topic_values(expected=1)
    assert [e.id for e in decode_record(value)] == ["sentinel"]  # type: ignore[union-attr]


def test_a_tenant_over_its_rate_is_told_when_to_retry(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    for running in start_gateway(broker, settings_factory, tmp_path,
                                 tenant_events_per_second=1, tenant_burst_events=5):  # fmt: skip
        assert running.post([cloud(str(i)) for i in range(5)]).status_code == 202
        refused = running.post([cloud("more")])
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert running.post([cloud("x")], key=running.other_key).status_code == 202


def test_usage_reads_are_scoped_to_the_keys_tenant(gateway: Running) -> None:
    def get(path: str, key: str | None, **params: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return gateway.runner.run(gateway.client.get(path, params=params, headers=headers))

    # Two tenants with a subscription of the same id, each with usage of its own: a read
    # that leaked across tenants would show the other's amount, or both.
    stores = Stores.open(gateway.settings)
    try:
        stores.sink.write_batch(BatchResult(rated=RatedRows.of([
            RatedTotal(tenant, "sub-1", "api_calls", "", date(2026, 10, 1), "starter", 1, "USD",
                       quantity, nanos, 0, offset, 0, 0)
            for offset, (tenant, quantity, nanos) in enumerate(
                [("acme", 7, 70_000_000), ("globex", 9_000, 90_000_000_000)])
        ])))  # fmt: skip
    finally:
        stores.close()
    mine = get("/v1/usage/sub-1", gateway.key, period="2026-10")
    assert mine.status_code == 200
    assert mine.json()["tenant"] == "acme" and mine.json()["totals"] == {"USD": "0.070000000"}
    assert [line["quantity"] for line in mine.json()["lines"]] == ["7"]
    theirs = get("/v1/usage/sub-1", gateway.other_key, period="2026-10").json()
    assert theirs["tenant"] == "globex" and theirs["totals"] == {"USD": "90.000000000"}
    assert [line["quantity"] for line in theirs["lines"]] == ["9000"]
    assert get("/v1/usage/sub-1", None).status_code == 401
    assert get("/v1/usage/sub-1", gateway.key, period="10/2026").status_code == 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
attribute_values = st.one_of(
    json_values, st.sampled_from(["1.0", "api_calls", "tokens", "sub-1", "", "-1", "1e400"])
)
near_events = st.dictionaries(
    st.sampled_from(["specversion", "id", "source", "type", "subject", "time", "data",
                     "tenant", "meter", "quantity", "subscription", "timestamp", "properties"]),
    attribute_values,
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(msgspec.json.encode),
    near_events.map(msgspec.json.encode),
    st.lists(near_events, max_size=5).map(msgspec.json.encode),
)
content_types = st.sampled_from(
    ["application/cloudevents+json", CLOUD_BATCH, "application/json", "text/plain", ""]
)


def test_fuzzed_requests_never_get_a_server_error(gateway: Running) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, content_type=content_types)
    def post_anything(body: bytes, content_type: str) -> None:
        response = gateway.post(body, content_type)
        assert response.status_code in {202, 400, 403, 413, 415, 422, 429}, response.text
        if response.status_code != 202:
            assert response.json()

    post_anything()


@pytest.fixture
def admin_gateway(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Running, str, str]]:
    """The gateway with the store itself (as with a ClickHouse server), its own
    subscriptions topic, and admin keys for acme and globex."""
    topic = f"meterline.subscriptions.{uuid.uuid4().hex[:8]}"
    for running in start_gateway(broker, settings_factory, tmp_path, subscriptions_topic=topic):
        keys = KeyRing(running.settings.api_keys_path)
        acme_admin, _ = keys.create("acme", "admin", scope="admin")
        globex_admin, _ = keys.create("globex", "admin", scope="admin")
        yield running, acme_admin, globex_admin


def test_subscriptions_are_managed_over_http_with_an_admin_key(
    admin_gateway: tuple[Running, str, str],
) -> None:
    gateway, admin, other_admin = admin_gateway

    def call(method: str, path: str, body: Any = None, key: str | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else msgspec.json.encode(body) if body else b""
        headers = {"authorization": f"Bearer {key or admin}", "content-type": "application/json"}
        return gateway.runner.run(
            gateway.client.request(method, path, content=content, headers=headers)
        )

    refused = call("GET", "/v1/subscriptions", key=gateway.key)
    assert refused.status_code == 403 and "admin key" in refused.json()["detail"]

    imported = call("POST", "/v1/subscriptions", [
        {"subscription": "sub-1", "customer": "c1", "plan": "starter", "started_at": "2026-01-01"},
        {"subscription": "sub-2", "customer": "c2", "plan": "growth", "started_at": "2026-03-01"},
    ])  # fmt: skip
    assert imported.status_code == 201, imported.text
    assert imported.json()["imported"] == 2
    bad_rows = call("POST", "/v1/subscriptions", [
        {"subscription": "sub-3", "customer": "c3", "plan": "platinum", "started_at": "2026-01-01"},
    ])  # fmt: skip
    assert bad_rows.status_code == 422 and "'platinum' is not in the price book" in bad_rows.text
    other_tenant = call("POST", "/v1/subscriptions", {
        "tenant": "globex", "subscription": "x", "customer": "c", "plan": "starter",
        "started_at": "2026-01-01",
    })  # fmt: skip
    assert other_tenant.status_code == 403
    assert call("POST", "/v1/subscriptions", b"{nope").status_code == 400

    customers = call("POST", "/v1/customers", [
        {"customer": "c-eu", "name": "Euro AG", "tax_rate": 19, "currency": "EUR"},
        {"customer": "c-us", "name": "Dollar Inc", "tax_rate": "8.25", "external_id": "crm-7"},
    ])  # fmt: skip
    assert customers.status_code == 201, customers.text
    assert call("GET", "/v1/customers").json()["customers"][1] == {
        "customer": "c-us", "name": "Dollar Inc", "tax_rate": "8.2500", "external_id": "crm-7",
        "currency": "", "address": "", "tax_id": "", "payment_terms_days": 30, "country": "",
        "region": "", "tax_exempt": False,
    }  # fmt: skip
    terms = call("POST", "/v1/customers", [{"customer": "c-x", "name": "X", "tax_id": "DE1",
                                            "address": "Hof 1\nBerlin",
                                            "payment_terms_days": 45}])  # fmt: skip
    assert terms.status_code == 201, terms.text
    assert terms.json()["customers"][0]["payment_terms_days"] == 45
    too_long = call("POST", "/v1/customers",
                    [{"customer": "c-y", "name": "Y", "payment_terms_days": 400}])  # fmt: skip
    assert too_long.status_code == 422 and "payment_terms_days 400" in too_long.text
    bad_rate = call("POST", "/v1/customers", {"customer": "x", "name": "X", "tax_rate": 120})
    assert bad_rate.status_code == 422 and "not a percentage from 0 to 100" in bad_rate.text
    assert call("GET", "/v1/customers", key=gateway.key).status_code == 403
    wrong_currency = call("POST", "/v1/subscriptions", {
        "subscription": "sub-eu", "customer": "c-eu", "plan": "starter",
        "started_at": "2026-01-01",
    })  # fmt: skip
    assert wrong_currency.status_code == 422 and "EUR" in wrong_currency.json()["detail"]

    listed = call("GET", "/v1/subscriptions").json()
    assert listed["total"] == 2
    assert [(s["subscription"], s["plan"]) for s in listed["subscriptions"]] == [
        ("sub-1", "starter"), ("sub-2", "growth")
    ]  # fmt: skip
    assert call("GET", "/v1/subscriptions", key=other_admin).json()["total"] == 0
    assert call("GET", "/v1/subscriptions/sub-1", key=other_admin).status_code == 404

    euros = call("POST", "/v1/subscriptions/sub-2/change", {"plan": "scale", "on": "2099-01-01"})
    assert euros.status_code == 422 and "priced in EUR" in euros.json()["detail"], euros.text
    changed = call("POST", "/v1/subscriptions/sub-2/change",
                   {"plan": "starter", "on": "2099-01-01"})  # fmt: skip
    assert changed.status_code == 200, changed.text
    revised = call("POST", "/v1/subscriptions/sub-2/revise", {"percent": 5, "on": "2099-02-01"})
    assert revised.status_code == 200, revised.text
    shown = call("GET", "/v1/subscriptions/sub-2").json()
    assert [(p["on"], p["plan"]) for p in shown["plans"]] == [
        ("2026-03-01", "growth"), ("2099-01-01", "starter"), ("2099-02-01", "starter@+5%")
    ]  # fmt: skip
    assert [h["change"] for h in shown["history"]] == ["imported", "plan changed", "prices revised"]

    added = call("POST", "/v1/subscriptions/sub-1/add-charge",
                 {"add_on": "storage", "on": "2099-01-01"})  # fmt: skip
    assert added.json()["plans"][-1] == {"on": "2099-01-01", "plan": "starter+storage",
                                         "at": "2099-01-01T00:00:00Z"}  # fmt: skip
    # A feature given to sub-1 alone: 500 more calls than starter's hard 100,000.
    pack = {"feature": "api", "kind": "metered", "meter": "api_calls", "limit": "500"}
    granted = call("POST", "/v1/subscriptions/sub-1/grant-feature", pack)
    assert granted.status_code == 200, granted.text
    assert [f["feature"] for f in granted.json()["features"]] == ["api"]
    (api,) = call("GET", "/v1/entitlements/sub-1/api", key=gateway.key).json()["features"]
    assert (api["limit"], api["enforcement"]) == ("100500", "hard")
    refused = call("POST", "/v1/subscriptions/sub-1/grant-feature",
                   {"feature": "api", "kind": "metered", "meter": "api_calls"})  # fmt: skip
    assert refused.status_code == 422 and "needs meter and limit" in refused.text
    revoked = call("POST", "/v1/subscriptions/sub-1/revoke-feature", {"feature": "api"})
    assert revoked.status_code == 200 and revoked.json()["features"] == []  # not yet started
    (api,) = call("GET", "/v1/entitlements/sub-1/api", key=gateway.key).json()["features"]
    assert api["limit"] == "100000"
    cancelled = call("POST", "/v1/subscriptions/sub-1/cancel", {"at": "2099-03-01T00:00:00Z"})
    assert cancelled.json()["ended_at"] == "2099-03-01T00:00:00Z", cancelled.text
    assert call("POST", "/v1/subscriptions/sub-1/renew").json()["ended_at"] is None
    for path, body, status, problem in (
        ("/v1/subscriptions/sub-1/renew", None, 422, "has no end to remove"),
        ("/v1/subscriptions/sub-1/change", {"plan": "growth", "on": "2020-01-01"}, 422,
         "the earliest is"),
        ("/v1/subscriptions/sub-1/change", {"plan": "growth", "when": "soon"}, 400, "when"),
        ("/v1/subscriptions/sub-1/revise", {"percent": 0}, 422, "changes no price"),
        ("/v1/subscriptions/sub-404/cancel", None, 404, "no subscription 'sub-404'"),
        ("/v1/subscriptions/sub-1/pause", None, 404, "no action 'pause'"),
    ):  # fmt: skip
        answer = call("POST", path, body)
        assert answer.status_code == status and problem in answer.json()["detail"], answer.text
        assert answer.headers["content-type"] == "application/problem+json"

    published = gateway.runner.run(
        read_records(gateway.settings.kafka_bootstrap_servers or "",
                     gateway.settings.subscriptions_topic, 1, 7, timeout=10)
    )  # fmt: skip
    newest = {row.owner: row for row in (decode(record.value) for record in published)}
    assert newest[("acme", "sub-2")].changes == (
        (midnight(date(2099, 1, 1)), "starter"), (midnight(date(2099, 2, 1)), "starter@+5%")
    )  # fmt: skip
    assert newest[("acme", "sub-1")].ended_at is None

    # Coupons: taken on from a day, shown, refused when they cannot apply, ended.
    coupon = call("POST", "/v1/subscriptions/sub-1/add-coupon",
                  {"coupon": "welcome", "on": "2099-01-15"})  # fmt: skip
    assert coupon.status_code == 200, coupon.text
    assert coupon.json()["coupons"] == [{"coupon": "welcome", "on": "2099-01-15", "ended": None}]
    assert coupon.json()["history"][-1]["change"] == "coupon applied"
    for body, problem in (
        ({"coupon": "welcome", "on": "2099-02-01"}, "has coupon 'welcome' already"),
        ({"coupon": "nope"}, "coupon 'nope' is not in the price book"),
    ):  # fmt: skip
        refused = call("POST", "/v1/subscriptions/sub-1/add-coupon", body)
        assert refused.status_code == 422 and problem in refused.json()["detail"], refused.text
    ended = call("POST", "/v1/subscriptions/sub-1/remove-coupon",
                 {"coupon": "welcome", "on": "2099-03-01"})  # fmt: skip
    assert ended.json()["coupons"] == [
        {"coupon": "welcome", "on": "2099-01-15", "ended": "2099-03-01"}
    ]
    bad = call("POST", "/v1/subscriptions/sub-1/remove-coupon", {"coupons": "welcome"})
    assert bad.status_code == 400, bad.text
