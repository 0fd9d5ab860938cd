"""Prepaid credits on invoices over the real store, each amount against a plain Decimal
computation: grants applied in their declared order (priority, then the soonest to
expire), before tax, each its own line; a paid top-up billed once; a balance carried into
the next period and never used twice, however often a period is closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from base.settings import Settings
from ingest.store_access import DirectStore
from invoicing.closing import close_period
from invoicing.credits import PAID, Grant
from invoicing.invoice import CREDIT, TOP_UP
from meterline.cli import main
from meterline.cli_support import handlers, load_settings
from meterline.embedded_broker import EmbeddedBroker
from tests.integration.gateway_helpers import gateway_for
from tests.integration.test_invoices import AUG, BOOK, SEP, TENANT, Feed, invoices, seed_scenario
from tests.stores import Stores

pytestmark = pytest.mark.integration


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@pytest.fixture
def feed(store_environment: Stores) -> Feed:
    return seed_scenario(store_environment)


@pytest.mark.usefixtures("feed")
def test_credits_are_applied_in_order_before_tax_once_each_and_carried_over(
    store_environment: Stores,
) -> None:
    store = store_environment
    store.sources.grants.write([
        Grant(TENANT, "G-LONG", "cust-a", "", "USD", Decimal("10.00"), 1, AUG, date(2026, 12, 1),
              reason="welcome"),
        Grant(TENANT, "G-SOON", "cust-a", "a", "USD", Decimal("3.00"), 1, AUG, date(2026, 9, 15),
              reason="apology"),
        Grant(TENANT, "G-EUR", "cust-a", "", "EUR", Decimal("50.00"), 0, AUG),
        Grant(TENANT, "G-PAID", "cust-c", "", "USD", Decimal("20.00"), 5, date(2026, 8, 10),
              kind=PAID, price=Decimal("18.00"), reason="top-up"),
    ])  # fmt: skip
    close_period(store.sources, BOOK, AUG)
    august = invoices(store, AUG)

    # a: what it bills before credits, then the sooner-expiring grant first at equal
    # priority; the euro grant does not apply to a dollar invoice.
    a = august["a"]
    before = sum(x.amount for x in a.lines if x.kind not in (CREDIT, TOP_UP))
    applied = [(x.item, -x.amount) for x in a.lines if x.kind == CREDIT]
    soon = min(Decimal("3.00"), before)
    assert applied == [("G-SOON", soon), ("G-LONG", min(Decimal("10.00"), before - soon))]
    assert a.subtotal == before - sum(amount for _, amount in applied)
    assert a.tax == sum(cents(x.amount * Decimal("0.0825")) for x in a.lines), "tax after credit"
    # c: the paid top-up is billed once, and its credit covers what c owes, up to 20.
    c = august["c"]
    (top_up,) = [x for x in c.lines if x.kind == TOP_UP]
    assert top_up.amount == Decimal("18.00")
    owed = sum(x.amount for x in c.lines if x.kind != CREDIT)
    assert [-x.amount for x in c.lines if x.kind == CREDIT] == [min(Decimal("20.00"), owed)]

    assert close_period(store.sources, BOOK, AUG).unchanged == 3, "closed again: the same"
    close_period(store.sources, BOOK, AUG, finalize=True)
    close_period(store.sources, BOOK, SEP)
    a_sep = invoices(store, SEP)["a"]
    left = Decimal("10.00") - min(Decimal("10.00"), before - soon)
    sep_due = sum(x.amount for x in a_sep.lines if x.kind not in (CREDIT, TOP_UP))
    assert [(x.item, -x.amount) for x in a_sep.lines if x.kind == CREDIT] == (
        [("G-LONG", min(left, sep_due))] if left else []
    )
    assert not [x for x in invoices(store, SEP)["c"].lines if x.kind == TOP_UP], "billed once"

    runner = CliRunner()
    assert left > 0 and [x.item for x in a_sep.lines if x.kind == CREDIT] == ["G-LONG"]
    voided = runner.invoke(main, ["credits", "void", "G-LONG", "--tenant", TENANT])
    assert voided.exit_code == 0, voided.output
    assert "void already" in runner.invoke(main, ["credits", "void", "G-LONG", "--tenant",
                                                  TENANT]).output  # fmt: skip
    close_period(store.sources, BOOK, SEP)
    assert not [x for x in invoices(store, SEP)["a"].lines if x.kind == CREDIT], "void: unused"
    listed = runner.invoke(main, ["credits", "list", "--tenant", TENANT, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    balances = {row["grant"]: Decimal(row["balance"]) for row in json.loads(listed.output)}
    assert balances["G-SOON"] == Decimal("3.00") - soon and balances["G-EUR"] == Decimal(50)
    states = {row["grant"]: row["state"] for row in json.loads(listed.output)}
    assert states["G-LONG"] == "voided" and states["G-SOON"] == "expired"
    asked = ["credits", "grant", "--tenant", TENANT, "--customer", "cust-b", "--amount", "12.50",
             "--currency", "EUR", "--reason", "goodwill"]  # fmt: skip
    made = runner.invoke(main, asked)
    assert made.exit_code == 0 and "12.50 EUR to cust-b (free)" in made.output, made.output
    for bad, message in ((["--amount", "1.005", "--currency", "USD"], "whole minor units"),
                         (["--amount", "5", "--currency", "XXX"], "ISO 4217"),
                         (["--amount", "5", "--currency", "USD", "--customer", "nobody"],
                          "no customer")):  # fmt: skip
        asked = ["credits", "grant", "--tenant", TENANT, "--customer", "cust-a", "--reason", "x"]
        refused = runner.invoke(main, [*asked, *bad])
        assert refused.exit_code == 1 and message in refused.output, refused.output


@pytest.mark.usefixtures("feed")
def test_credits_are_granted_and_read_over_http_with_an_admin_key(
    store_environment: Stores, broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:  # fmt: skip
    gateway, ingest_key = gateway_for(broker, settings_factory, tmp_path)
    admin, _ = gateway.keys.create(TENANT, "finance", scope="admin")
    gateway.store = DirectStore(load_settings(), BOOK, None, handlers())

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gateway.asgi())
        headers = {"authorization": f"Bearer {admin}"}
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
                grant = {"customer": "cust-a", "amount": "25.00", "currency": "USD",
                         "reason": "support gesture", "expires_on": "2027-01-01"}  # fmt: skip
                return [
                    await client.post("/v1/credits", json=grant,
                                      headers={"authorization": f"Bearer {ingest_key}"}),
                    await client.post("/v1/credits", json=grant, headers=headers),
                    await client.post("/v1/credits", json={**grant, "amount": "0.001"},
                                      headers=headers),
                    await client.post("/v1/credits", json={**grant, "customer": "nobody"},
                                      headers=headers),
                    await client.post("/v1/credits", content=b"{", headers=headers),
                    await client.get("/v1/credits?customer=cust-a", headers=headers),
                ]  # fmt: skip
        finally:
            await gateway.store.close()  # chDB serves one data directory per process

    forbidden, made, tiny, nobody, malformed, listed = asyncio.run(calls())
    assert forbidden.status_code == 403
    assert made.status_code == 201 and made.json()["balance"] == "25.00", made.text
    assert tiny.status_code == 422 and "whole minor units" in tiny.json()["detail"]
    assert nobody.status_code == 422 and "no customer" in nobody.json()["detail"]
    assert malformed.status_code == 400
    (only,) = listed.json()["grants"]
    assert only["grant"] == made.json()["grant"] and only["history"] == []
