"""Dunning from the command line, against the real store and a real HTTP receiver (the
tenant's webhook, standing in for its mailer or payment provider's endpoint: it only
records what it is sent): an overdue invoice runs through the schedule, one event per
step, each signed and delivered once; a paid invoice leaves it; an event the receiver
refused is delivered by the next run; the final step cancels at the period's end."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aggregation.handlers import DUNNING
from base.settings import Settings
from ingest.store_access import DirectStore
from invoicing.closing import close_period
from invoicing.dunning import Policy
from invoicing.dunning_ledger import DunningLedger
from meterline.cli import main
from meterline.cli_support import handlers
from meterline.embedded_broker import EmbeddedBroker
from rating.period import Period, midnight
from tests.integration.gateway_helpers import gateway_for
from tests.integration.test_invoices import AUG, BOOK, TENANT, Feed, invoices, seed_scenario
from tests.stores import Stores

pytestmark = pytest.mark.integration

ISSUED = datetime(2026, 9, 2, 9, tzinfo=UTC)  # due on Oct 2 (net 30)


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that keeps every POST and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.status == 200:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()},
                                              body))  # fmt: skip
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/dunning"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture
def feed(store_environment: Stores) -> Feed:
    return seed_scenario(store_environment)


@pytest.mark.usefixtures("feed")
def test_an_overdue_invoice_runs_through_the_schedule_and_its_events_reach_the_webhook(
    store_environment: Stores, receiver: Receiver, tmp_path: Path
) -> None:
    store, runner = store_environment, CliRunner()
    close_period(store.sources, BOOK, AUG, finalize=True, clock=lambda: ISSUED)
    august = invoices(store, AUG)
    policy = ["--final", "21:cancel_at_period_end", "--webhook", receiver.url]
    set_up = runner.invoke(main, ["dunning", "policy", "--tenant", TENANT, *policy])
    assert set_up.exit_code == 0, set_up.output
    secret = DunningLedger(store.connection).policy(TENANT).secret
    assert secret and secret in set_up.output

    def run(day: str) -> str:
        ran = runner.invoke(main, ["dunning", "run", "--tenant", TENANT, "--today", day])
        assert ran.exit_code == 0, ran.output
        return ran.output

    assert "3 steps taken, 3 events delivered" in run("2026-10-03")  # a day late: reminders
    assert "0 steps taken" in run("2026-10-03"), "a run repeated takes no step twice"
    first = receiver.events()
    assert [(e["action"], e["step"], e["days_overdue"]) for e in first] == [("reminder", 1, 1)] * 3
    headers, body = receiver.received[0]
    signed = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-meterline-signature"] == f"sha256={signed}"
    b = august["b"]
    assert {e["invoice_id"]: e["outstanding"] for e in first}[b.invoice_id] == str(b.total)

    # b's customer pays; the bank statement marks it paid.
    statement = tmp_path / "bank.csv"
    statement.write_text(f"date,amount,reference\n2026-10-05,{b.total},INV {b.number_label}\n")
    paid = runner.invoke(main, ["payments", "import", str(statement), "--tenant", TENANT])
    assert paid.exit_code == 0 and "1 of 1 lines matched" in paid.output, paid.output
    # Day 7: a's and c's retry (day 3) and reminder (day 7); b is paid, so nothing for it.
    assert "4 steps taken, 4 events delivered" in run("2026-10-09")
    later = receiver.events()[3:]
    assert sorted((e["subscription"], e["action"]) for e in later) == [
        ("a", "reminder"),
        ("a", "retry"),
        ("c", "reminder"),
        ("c", "retry"),
    ]
    receiver.status = 503
    refused = run("2026-10-16")
    assert "2 steps taken, 0 events delivered" in refused and "later run retries" in refused
    receiver.status = 200
    assert "0 steps taken, 2 events delivered" in run("2026-10-17")
    # Day 21: the final step ends a's and c's subscriptions at the end of the period they
    # are in when the run acts (now: --today says which steps are due, not when it acts).
    final = run("2026-10-23")
    assert "2 steps taken, 2 events delivered" in final
    period_end = midnight(Period.of(datetime.now(UTC).date()).end)
    for subscription in ("a", "c"):
        ended = store.subscriptions.subscription(TENANT, subscription)
        assert ended is not None and ended.ended_at == period_end
    assert [e["type"] for e in receiver.events()[-2:]] == [
        "meterline.dunning.cancel_at_period_end"
    ] * 2
    listed = runner.invoke(main, ["dunning", "events", "--tenant", TENANT, "--format", "json"])
    assert all(e["delivered_at"] for e in json.loads(listed.output))
    assert len({e["id"] for e in receiver.events()}) == len(receiver.events()) == 11

    bad = runner.invoke(main, ["dunning", "policy", "--tenant", TENANT, "--steps", "3:nag"])
    assert bad.exit_code == 1 and "DAYS:ACTION" in bad.output


def test_a_serving_gateway_runs_dunning_on_its_schedule(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path,
    receiver: Receiver,
) -> None:  # fmt: skip
    """As `meterline serve` does: the gateway asks the store's holder for a run every
    dunning_interval_hours (here a fraction of a second), and the events reach the hook."""
    gateway, _ = gateway_for(broker, settings_factory, tmp_path)
    seeded = Stores.open(gateway.settings)
    try:
        seed_scenario(seeded)
        close_period(seeded.sources, BOOK, AUG, finalize=True, clock=lambda: ISSUED)
        DunningLedger(seeded.connection).set_policy(TENANT, Policy(webhook=receiver.url))
    finally:
        seeded.close()
    gateway.store = DirectStore(gateway.settings, BOOK, None, handlers())
    gateway.periodic = {DUNNING: 0.2}

    async def serve_a_while() -> None:
        async with gateway:
            deadline = asyncio.get_running_loop().time() + 20
            while len(receiver.received) < 12 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # runs after the first take no step twice

    asyncio.run(serve_a_while())
    # Long overdue today: every one of the default policy's four steps, for each invoice.
    assert sorted(e["step"] for e in receiver.events()) == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
