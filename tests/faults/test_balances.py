"""Real-time balances end to end, through `meterline serve`: credits granted, usage sent,
an alert that arrives signed at a receiver the test starts, once per crossing across a
SIGKILL of the worker; the entitlement denied at its hard limit and the gateway refusing
the meter's events; an immediate upgrade that lifts the cap; and the month's invoice,
split at the upgrade's second with the credit applied, equal to a plain Decimal
computation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from base.settings import Settings
from ingest.api_keys import KeyRing
from invoicing.invoice import CREDIT, FIXED_FEE, USAGE
from meterline.demo import generator
from meterline.demo.job import prepare_store
from meterline.embedded_broker import free_port
from meterline.worker_process import settings_env
from rating.period import Period
from tests.faults.test_serve_faults import alive, child_pids
from tests.integration.test_serve import wait_for_health
from tests.receiver import receiving
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PLANS = """
meters:
  - {id: api_calls, unit: call}
plans:
  - id: basic
    currency: USD
    fixed_fees: [{id: platform, name: Platform, amount: "30"}]
    charges: [{meter: api_calls, model: per_unit, unit_price: "0.01"}]
    entitlements:
      - {feature: api, kind: metered, meter: api_calls, limit: 1000, enforcement: hard}
  - id: pro
    currency: USD
    fixed_fees: [{id: platform, name: Platform, amount: "90"}]
    charges: [{meter: api_calls, model: per_unit, unit_price: "0.005"}]
    entitlements:
      - {feature: api, kind: metered, meter: api_calls, limit: 100000, enforcement: hard}
"""


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """``check()`` once it is truthy (polled), or a failure naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)
    return found


def worker_pid(serve: int) -> int:
    """The worker serve runs (waiting for one to be running)."""

    def running() -> int | None:
        for pid in child_pids(serve):
            if alive(pid) and b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        return None

    found: int = until(running, "a running worker")
    return found


def test_credits_alerts_a_hard_cap_and_an_immediate_upgrade_through_serve(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "plans.yaml").write_text(PLANS)
    settings = settings_factory(
        tmp_path, gateway_port=free_port(), worker_web_port=free_port(),
        api_keys_file=tmp_path / "keys.json", price_book=tmp_path / "plans.yaml",
        refuse_over_hard_limit=True, webhook_interval_seconds=0.5,
    )  # fmt: skip
    month = datetime.now(UTC).date().replace(day=1)
    prepare_store(settings, [generator.subscription("acme", "sub-1", "cust-1", "basic", month)])
    keys = KeyRing(settings.api_keys_path)
    admin, _ = keys.create("acme", "finance", scope="admin")
    service, _ = keys.create("acme", "service")
    env = settings_env(settings, "")
    del env["KAFKA_BOOTSTRAP_SERVERS"]  # serve starts the embedded broker itself
    url = f"http://127.0.0.1:{settings.gateway_port}"
    server = subprocess.Popen([sys.executable, "-m", "meterline", "serve"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              process_group=0)  # fmt: skip
    sent = 0
    try:
        wait_for_health(url, server)
        with receiving() as receiver, httpx.Client(base_url=url, timeout=30) as http:

            def admin_call(method: str, path: str, body: object = None) -> Any:
                answer = http.request(method, path, json=body,
                                      headers={"authorization": f"Bearer {admin}"})  # fmt: skip
                assert answer.status_code < 300, answer.text
                return answer.json()

            def send(quantity: int, number: int | None = None) -> dict[str, Any]:
                nonlocal sent
                if number is None:
                    sent, number = sent + 1, sent
                stamp = datetime.now(UTC).isoformat()
                event = {"id": f"e{number}", "subscription": "sub-1", "meter": "api_calls",
                         "quantity": quantity, "timestamp": stamp}  # fmt: skip
                answer = http.post("/v1/events", json=event,
                                   headers={"authorization": f"Bearer {service}"})  # fmt: skip
                assert answer.status_code in (202, 422), answer.text
                said: dict[str, Any] = answer.json()
                return said

            def api() -> dict[str, Any]:
                answer = http.get("/v1/entitlements/sub-1/api",
                                  headers={"authorization": f"Bearer {service}"})  # fmt: skip
                assert answer.status_code == 200, answer.text
                feature: dict[str, Any] = answer.json()["features"][0]
                return feature

            made = admin_call("POST", "/v1/webhooks",
                              {"url": receiver.url, "types": ["alert.crossed"]})  # fmt: skip
            receiver.secret = made["secret"]
            admin_call("POST", "/v1/alerts", {"id": "calls-600", "target": "sub-1",
                                              "metric": "quantity", "meter": "api_calls",
                                              "threshold": "600"})  # fmt: skip
            admin_call("POST", "/v1/alerts", {"id": "api-90", "target": "sub-1",
                                              "metric": "percent", "feature": "api",
                                              "threshold": "90"})  # fmt: skip
            admin_call("POST", "/v1/credits", {"customer": "cust-1", "amount": "5.00",
                                               "currency": "USD", "reason": "welcome"})  # fmt: skip
            time.sleep(1.5)  # a worker reads rules changed within a second

            for _ in range(4):
                send(100)
            until(lambda: api()["usage"] == "400", "usage of 400 calls")
            assert receiver.ids() == []
            for _ in range(3):
                send(100)  # 700: past 600
            (first,) = receiver.wait_for(1, "alert.crossed")

            # SIGKILL the worker: serve starts another, which reads its partitions again
            # from the last commit; the same events resent count once and cross nothing.
            killed = worker_pid(server.pid)
            os.kill(killed, signal.SIGKILL)
            until(lambda: not alive(killed), "the worker's death")
            until(lambda: worker_pid(server.pid) != killed, "a new worker")
            wait_for_health(url, server)
            for number in range(7):
                send(100, number)
            send(100)
            until(lambda: api()["usage"] == "800", "usage of 800 after the restart")
            send(100)  # 900: 90% of the limit
            alerts = receiver.wait_for(2, "alert.crossed")
            time.sleep(2)  # room for another crossing, had the replay made one
            # Once per crossing: two ids. Delivery is at least once, so a receiver drops
            # an id it has seen; a delivery made again carries the same body.
            assert sorted(set(receiver.ids())) == alerts
            for alert in alerts:
                bodies = {json.dumps(r.body) for r in receiver.received if r.id == alert}
                assert len(bodies) == 1, bodies
            assert all(r.verified for r in receiver.received)
            crossed = {r.body["data"]["rule"]: r.body["data"] for r in receiver.received}
            assert crossed["calls-600"]["value"] == "700" and crossed["api-90"]["value"] == "90"
            assert first in alerts

            # The hard limit: the entitlement turns to deny, then the gateway refuses.
            send(100)  # 1,000 of 1,000
            began = time.monotonic()
            until(lambda: not api()["has_access"], "a deny at the hard limit")
            print(f"\ndeny seen {time.monotonic() - began:.3f} s after the crossing event")
            # Events sent until then are accepted and billed: the gateway hears of the
            # deny within a second of the event that reached the limit.
            taken: list[int] = []

            def refusal() -> dict[str, Any] | None:
                said = send(100)
                taken.append(said["accepted"])
                return said if said["rejected"] else None

            refused = until(refusal, "a refusal")
            assert refused["rejected"][0]["reason"] == "hard_limit_reached"
            basic_calls = 1000 + 100 * sum(taken)

            # An immediate upgrade: the cap lifts, and usage from its second is pro's.
            upgraded = admin_call("POST", "/v1/subscriptions/sub-1/change",
                                  {"plan": "pro", "now": True})  # fmt: skip
            instant = datetime.fromisoformat(upgraded["plans"][-1]["at"])
            until(lambda: api()["has_access"], "access after the upgrade")
            assert api()["limit"] == "100000"
            until(lambda: datetime.now(UTC) > instant, "the upgrade's second")
            # The gateway hears of the lifted cap within a second (until then it refuses,
            # and a refused event is not billed: the same one is sent again).
            lifted = sent
            until(lambda: send(200, lifted)["accepted"], "an event accepted after the upgrade")
            sent += 1
            for _ in range(2):
                assert send(200)["accepted"] == 1
            until(lambda: api()["usage"] == str(basic_calls + 600), "usage under pro")

            # The crash property across the upgrade: a worker killed after it reads the
            # change again from the store, and the same events resent count once, each
            # under the plan of its own second.
            killed = worker_pid(server.pid)
            os.kill(killed, signal.SIGKILL)
            until(lambda: not alive(killed), "the worker's death")
            until(lambda: worker_pid(server.pid) != killed, "a new worker")
            wait_for_health(url, server)
            for number in (lifted, sent - 2, sent - 1):
                assert send(200, number)["accepted"] == 1  # a duplicate is acknowledged
            time.sleep(1)
            assert api()["usage"] == str(basic_calls + 600) and api()["has_access"]
        server.send_signal(signal.SIGTERM)
        said = server.communicate(timeout=180)[0].decode(errors="replace")
        assert server.returncode == 0, said
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            print(server.communicate()[0].decode(errors="replace")[-3000:])

    closed = subprocess.run([sys.executable, "-m", "meterline", "invoices", "close",
                             "--period", f"{month:%Y-%m}"], env=env, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert closed.returncode == 0, closed.stdout + closed.stderr
    stores = Stores.open(settings)
    try:
        (invoice,) = stores.sources.ledger.invoices([month], "acme")
    finally:
        stores.close()

    # The oracle, in plain Decimal: the calls accepted under basic at 0.01 and 600 at
    # 0.005 under pro (the refused ones are not billed); each plan's fee by its seconds of
    # the month; then the credit, up to what the invoice comes to.
    period = Period(month)
    split = int((instant - datetime.combine(month, datetime.min.time(), UTC)).total_seconds())
    usage = {(x.plan, x.kind): x.amount for x in invoice.lines if x.kind in (USAGE, FIXED_FEE)}
    assert usage == {
        ("basic", USAGE): cents(basic_calls * Decimal("0.01")),
        ("pro", USAGE): Decimal("3.00"),
        ("basic", FIXED_FEE): cents(Decimal(30) * split / period.seconds),
        ("pro", FIXED_FEE): cents(Decimal(90) * (period.seconds - split) / period.seconds),
    }
    before_credit = sum(usage.values(), Decimal(0))
    (credit,) = [x for x in invoice.lines if x.kind == CREDIT]
    assert credit.amount == -min(Decimal("5.00"), before_credit)
    assert invoice.total == before_credit + credit.amount
