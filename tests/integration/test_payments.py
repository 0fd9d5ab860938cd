"""Payments and collections over the real store, from the command line: an invoice's
state through due, overdue, partially paid, paid, failed and written off; a bank
statement matched on invoice number and amount, imported twice with no double count;
and the collections report's recovered, outstanding and lost amounts and DSO."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from base.settings import Settings
from ingest.store_access import DirectStore
from invoicing.closing import close_period
from meterline.cli import main
from meterline.cli_support import handlers, load_settings
from meterline.embedded_broker import EmbeddedBroker
from tests.integration.gateway_helpers import gateway_for
from tests.integration.test_invoices import AUG, BOOK, TENANT, Feed, invoices, seed_scenario
from tests.stores import Stores

pytestmark = pytest.mark.integration

ISSUED = datetime(2026, 9, 2, 9, tzinfo=UTC)  # so due on Oct 2 (net 30), overdue since


@pytest.fixture
def feed(store_environment: Stores) -> Feed:
    return seed_scenario(store_environment)


def states(runner: CliRunner) -> dict[str, dict[str, str]]:
    shown = runner.invoke(main, ["payments", "list", "--tenant", TENANT, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    return {row["subscription"]: row for row in json.loads(shown.output)}


@pytest.mark.usefixtures("feed")
def test_an_invoice_goes_from_overdue_to_paid_by_hand_and_by_bank_statement(
    store_environment: Stores, tmp_path: Path
) -> None:
    store, runner = store_environment, CliRunner()
    close_period(store.sources, BOOK, AUG, finalize=True, clock=lambda: ISSUED)
    august = invoices(store, AUG)
    a, b, c = august["a"], august["b"], august["c"]
    overdue = dict.fromkeys("abc", "overdue")
    assert {s: row["state"] for s, row in states(runner).items()} == overdue

    half = (a.total / 2).quantize(Decimal("0.01"))
    paid = runner.invoke(main, ["payments", "record", str(a.number), "--tenant", TENANT,
                                "--amount", str(half), "--on", "2026-09-20"])  # fmt: skip
    assert paid.exit_code == 0, paid.output
    assert states(runner)["a"]["state"] == "partially_paid"
    assert Decimal(states(runner)["a"]["outstanding"]) == a.total - half

    statement = tmp_path / "bank.csv"
    statement.write_text(
        "date,amount,reference\n"
        f"2026-10-05,{b.total},Invoice No. {b.number_label} Beta GmbH\n"
        f"2026-10-06,1.00,INV {c.number_label}\n"
        "2026-10-07,5.00,salary\n"
    )
    imported = runner.invoke(main, ["payments", "import", str(statement), "--tenant", TENANT])
    assert imported.exit_code == 0 and "1 of 3 lines matched" in imported.output, imported.output
    assert (
        "is neither what invoice No." in imported.output and "names no invoice" in imported.output
    )
    again = runner.invoke(main, ["payments", "import", str(statement), "--tenant", TENANT])
    assert again.exit_code == 0
    assert (
        states(runner)["b"]["state"] == "paid" and Decimal(states(runner)["b"]["paid"]) == b.total
    )

    assert runner.invoke(main, ["payments", "failed", c.invoice_id, "--tenant", TENANT,
                                "--reason", "card declined"]).exit_code == 0  # fmt: skip
    assert states(runner)["c"]["state"] == "failed"
    assert runner.invoke(main, ["payments", "write-off", c.invoice_id, "--tenant", TENANT,
                                "--reason", "gone"]).exit_code == 0  # fmt: skip
    assert states(runner)["c"]["state"] == "written_off"
    refused = runner.invoke(main, ["payments", "write-off", b.invoice_id, "--tenant", TENANT,
                                   "--reason", "x"])  # fmt: skip
    assert refused.exit_code == 1 and "is paid" in refused.output

    report = runner.invoke(main, ["report", "collections", "--until", "2026-10", "--months", "2",
                                  "--tenant", TENANT, "--format", "json"])  # fmt: skip
    assert report.exit_code == 0, report.output
    rows = {row["currency"]: row for row in json.loads(report.output)}
    usd, eur = rows["USD"], rows["EUR"]
    assert Decimal(eur["collected"]) == Decimal(eur["recovered"]) == b.total  # paid late
    assert Decimal(usd["collected"]) == half and Decimal(usd["recovered"]) == 0
    assert Decimal(usd["lost"]) == c.total and Decimal(usd["outstanding"]) == a.total - half
    assert Decimal(usd["invoiced"]) == a.total + c.total
    days = Decimal(61)  # September and October
    assert Decimal(usd["dso"]) == ((a.total - half) / (a.total + c.total) * days).quantize(
        Decimal("0.1")
    )


@pytest.mark.usefixtures("feed")
def test_a_provider_reports_payments_and_failures_over_http_with_an_admin_key(
    store_environment: Stores, broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:  # fmt: skip
    store = store_environment
    close_period(store.sources, BOOK, AUG, finalize=True, clock=lambda: ISSUED)
    a = invoices(store, AUG)["a"]
    gateway, ingest_key = gateway_for(broker, settings_factory, tmp_path)
    admin, _ = gateway.keys.create(TENANT, "provider", scope="admin")
    gateway.store = DirectStore(load_settings(), BOOK, None, handlers())

    async def call() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gateway.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:

            async def post(path: str, body: dict[str, Any], key: str = admin) -> httpx.Response:
                return await client.post(path, json=body,
                                         headers={"authorization": f"Bearer {key}"})  # fmt: skip

            try:
                return await asked(post)
            finally:
                # chDB serves one data directory per process: a connection left open would
                # keep this one's from the next test's.
                await gateway.store.close()

    async def asked(post: Any) -> list[httpx.Response]:
        return [
            await post("/v1/payments", {"invoice": a.invoice_id, "amount": "1"}, ingest_key),
            await post("/v1/payments/failed", {"invoice": a.invoice_id, "reason": "declined"}),
            await post("/v1/payments", {"invoice": str(a.number), "amount": str(a.total),
                                        "reference": "ch_1"}),
            await post("/v1/payments", {"invoice": str(a.number), "amount": str(a.total),
                                        "reference": "ch_1"}),
            await post("/v1/payments", {"invoice": "999999", "amount": "1"}),
            await post("/v1/payments", {"invoice": a.invoice_id, "amount": "-1"}),
            await post("/v1/payments", {"invoice": a.invoice_id, "amont": "1"}),
        ]  # fmt: skip

    forbidden, failed, paid, again, unknown, negative, malformed = asyncio.run(call())
    assert forbidden.status_code == 403
    assert failed.status_code == 200 and failed.json()["state"] == "failed"
    assert paid.status_code == 200 and paid.json()["state"] == "paid"
    assert again.json()["paid"] == str(a.total), "the same payment reported twice counts once"
    assert unknown.status_code == 422 and "no finalized invoice" in unknown.json()["detail"]
    assert negative.status_code == 422 and "more than 0" in negative.json()["detail"]
    assert malformed.status_code == 400
