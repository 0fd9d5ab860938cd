"""One customer across CRM and billing: customers exported in Salesforce's and HubSpot's
bulk shapes, loaded back (as the CRM exports them, with its ids and columns of its own)
through `customers import`, come back the same, now carrying the CRM's ids; and billing is
reported per CRM account, with ACV beside MRR and ARR."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from invoicing.closing import close_period
from meterline.cli import main
from subscriptions.crm import SHAPES
from tests.integration.test_invoices import AUG, BOOK, TENANT, Feed, seed_scenario
from tests.stores import Stores

pytestmark = pytest.mark.integration


@pytest.fixture
def feed(store_environment: Stores) -> Feed:
    return seed_scenario(store_environment)


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_customers_round_trip_through_a_crm_export_and_billing_is_reported_per_account(
    feed: Feed, store_environment: Stores, tmp_path: Path, crm: str
) -> None:
    store, runner = store_environment, CliRunner()
    before = store.subscriptions.customers(TENANT)
    with_details = replace(before[(TENANT, "cust-b")], address="Hauptstr. 1\n10115 Berlin",
                           tax_id="DE123456789", currency="EUR", payment_terms_days=14)  # fmt: skip
    store.subscriptions.write_customers([with_details], version=2)
    before = store.subscriptions.customers(TENANT)

    out = tmp_path / f"{crm}.csv"
    exported = runner.invoke(main, ["customers", "export", "--tenant", TENANT, "--format", crm,
                                    "-o", str(out)])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    # The CRM takes the file, gives each record an id of its own, and exports it back with
    # columns of its own, in another order.
    shape = SHAPES[crm]
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 3 and {r[shape.header[1]] for r in rows} == {"cust-a", "cust-b", "cust-c"}
    crm_id = shape.header[0]
    for number, row in enumerate(rows):
        row[crm_id] = f"0015g00000{number:08d}"
        row["Owner"] = "sales@example.com"
    back = tmp_path / f"{crm}-export.csv"
    with back.open("w", newline="", encoding="utf-8-sig") as file:
        writer = csv.DictWriter(file, fieldnames=["Owner", *reversed(shape.header)])
        writer.writeheader()
        writer.writerows(rows)
    imported = runner.invoke(main, ["customers", "import", str(back), "--format", crm,
                                    "--tenant", TENANT])  # fmt: skip
    assert imported.exit_code == 0, imported.output
    after = store.subscriptions.customers(TENANT)
    assert {key: replace(c, external_id="") for key, c in after.items()} == {
        key: replace(c, external_id="") for key, c in before.items()
    }, "the same customers, every field"
    assert after[(TENANT, "cust-b")].external_id == "0015g0000000000001"

    close_period(store.sources, BOOK, AUG, finalize=True)
    shown = runner.invoke(main, ["report", "accounts", "--until", "2026-08", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    accounts = {a["account"]: a for a in json.loads(shown.output)}
    b = accounts["0015g0000000000001"]
    assert (b["customer"], b["name"], b["currency"]) == ("cust-b", "Beta GmbH", "EUR")
    b_invoice = next(i for i in store.sources.ledger.invoices([AUG]) if i.subscription == "b")
    assert Decimal(b["invoiced"]) == b_invoice.subtotal and Decimal(b["arr"]) == 12 * Decimal(
        b["mrr"]
    )
    mrr = runner.invoke(main, ["report", "mrr", "--until", "2026-08", "--months", "1",
                               "--format", "json"])  # fmt: skip
    usd = next(r for r in json.loads(mrr.output) if r["currency"] == "USD")
    assert Decimal(usd["acv"]) == (Decimal(usd["arr"]) / usd["active"]).quantize(Decimal("0.01"))

    broken = tmp_path / "not-crm.csv"
    broken.write_text("Name,Phone\nAcme,123\n")
    refused = runner.invoke(main, ["customers", "import", str(broken), "--format", crm,
                                   "--tenant", TENANT])  # fmt: skip
    assert refused.exit_code == 1 and f"not a {crm} file" in refused.output
    untenanted = runner.invoke(main, ["customers", "import", str(back), "--format", crm])
    assert untenanted.exit_code == 1 and "give --tenant" in untenanted.output
