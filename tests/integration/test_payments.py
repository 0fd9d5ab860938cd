"""Payments and collections over the real store, from the command line: an invoice's
state through due, overdue, partially paid, paid, failed and written off; a bank
statement matched on invoice number and amount, imported twice with no double count;
and the collections report's recovered, outstanding and lost amounts and DSO."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from invoicing.closing import close_period
from meterline.cli import main
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
