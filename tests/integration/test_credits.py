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
import yaml
from click.testing import CliRunner

from base.settings import Settings
from ingest.store_access import DirectStore
from invoicing.closing import close_period
from invoicing.credits import PAID, ROLLOVER, Grant
from invoicing.grant_ledger import CreditBalances
from invoicing.invoice import CREDIT, TOP_UP
from meterline.cli import main
from meterline.cli_support import handlers, load_settings
from meterline.demo import PRICE_BOOK
from meterline.embedded_broker import EmbeddedBroker
from rating.loading import parse_price_book
from rating.plans import PriceBook
from tests.integration.gateway_helpers import gateway_for
from tests.integration.test_invoices import (
    AUG,
    BOOK,
    SEP,
    TENANT,
    Feed,
    at,
    invoices,
    seed_scenario,
)
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


def rolling_book() -> PriceBook:
    """The demo book with a rollover on starter's active users (5 included, 1.50 each
    past them): up to 3 a period left unused carry into the next."""
    data = yaml.safe_load(PRICE_BOOK.read_text())
    for plan in data["plans"]:
        for charge in plan["charges"]:
            if plan["id"] == "starter" and charge["meter"] == "active_users":
                charge["rollover"] = 3
    return parse_price_book(data, "rolling")


def test_grants_in_units_and_rolled_over_usage_bill_fewer_units(
    store_environment: Stores, feed: Feed
) -> None:
    """c (starter) sees 2 distinct users in August: 3 of its 5 included roll over. In
    September it sees 10 and makes 1,500 calls, with a grant of 1,000 calls: the invoice
    bills them as if 3 fewer users and 1,000 fewer calls, against the Decimal oracle."""
    store = store_environment
    book = rolling_book()
    feed.send([("c", "active_users", 1, at(AUG, 9), {"user": f"u{n}"}) for n in range(2)])
    feed.send([("c", "active_users", 1, at(SEP, 9), {"user": f"v{n}"}) for n in range(10)]
              + [("c", "api_calls", 1500, at(SEP, 10), {})])  # fmt: skip
    runner = CliRunner()
    granted = runner.invoke(main, ["credits", "grant", "--tenant", TENANT, "--customer",
                                   "cust-c", "--meter", "api_calls", "--amount", "1000",
                                   "--from", "2026-09-01", "--reason", "launch calls"])  # fmt: skip
    assert granted.exit_code == 0, granted.output
    close_period(store.sources, book, AUG)
    (carried,) = [g for g in store.sources.grants.grants(TENANT) if g.kind == ROLLOVER]
    assert (carried.meter, carried.amount, carried.effective_from) == ("active_users", 3, SEP)
    assert close_period(store.sources, book, AUG).unchanged == 3, "closed again: the same"
    assert [g.amount for g in store.sources.grants.grants(TENANT) if g.kind == ROLLOVER] == [3]
    close_period(store.sources, book, SEP)
    c = invoices(store, SEP)["c"]
    credits = {line.item: line for line in c.lines if line.kind == CREDIT}
    # The oracle: 5 overage users at 1.50 billed as 2, 1,500 calls at 0.0004 as 500.
    users = next(x for x in c.lines if x.kind == "usage" and x.item == "active_users")
    assert users.amount == cents(5 * Decimal("1.50"))
    assert (credits[carried.grant_id].quantity, credits[carried.grant_id].amount) == (
        3, -cents(3 * Decimal("1.50")))  # fmt: skip
    calls = [g for g in store.sources.grants.grants(TENANT) if g.meter == "api_calls"]
    assert (credits[calls[0].grant_id].quantity, credits[calls[0].grant_id].amount) == (
        1000, -cents(1000 * Decimal("0.0004")))  # fmt: skip
    listed = runner.invoke(main, ["credits", "list", "--tenant", TENANT, "--format", "json"])
    balances = {row["grant"]: row for row in json.loads(listed.output)}
    assert Decimal(balances[calls[0].grant_id]["balance"]) == 0
    assert Decimal(balances[carried.grant_id]["balance"]) == 0


def test_a_subscriptions_credit_as_its_period_began_is_what_alerts_read(
    store_environment: Stores, feed: Feed
) -> None:
    """What the worker's credit balance alerts start from: the grants a subscription may
    use less what invoices of earlier periods took of them."""
    store = store_environment
    store.sources.grants.write([
        Grant(TENANT, "G-A", "cust-a", "", "USD", Decimal("10.00"), 0, AUG, reason="welcome"),
        Grant(TENANT, "G-UNITS", "cust-a", "", "", Decimal(100), 0, AUG, reason="calls",
              meter="api_calls"),
    ])  # fmt: skip
    close_period(store.sources, BOOK, AUG)
    taken = -sum(x.amount for x in invoices(store, AUG)["a"].lines
                 if x.kind == CREDIT and x.item == "G-A")  # fmt: skip
    balances = CreditBalances(store.connection)
    assert balances((TENANT, "a")) == ("USD", Decimal("10.00") - taken)
    assert balances((TENANT, "b")) is None  # another customer's
