"""Webhooks over the real store and a real receiver: what the store records (invoices
drafted, finalized and credited, a subscription change, an alert's crossing, credits low
and expired) becomes one signed message each, delivered once, retried on the schedule
when the receiver fails, replayed by command with the same id; every attempt recorded."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from aggregation.alert_store import AlertStore
from aggregation.model import Crossing
from ingest.gateway import deliver
from invoicing.closing import close_period
from invoicing.credits import Grant
from meterline.cli import main
from subscriptions.model import Change
from tests.integration.test_invoices import AUG, BOOK, TENANT, Feed, seed_scenario
from tests.receiver import Receiver, receiving
from tests.stores import Stores
from webhooks import messages as kinds
from webhooks.delivery import outgoing, record

pytestmark = pytest.mark.integration


@pytest.fixture
def feed(store_environment: Stores) -> Feed:
    return seed_scenario(store_environment)


def added(runner: CliRunner, receiver: Receiver, *types: str) -> str:
    """An endpoint for the receiver, made by command; its id (the receiver keeps the secret)."""
    said = runner.invoke(main, ["webhooks", "add", receiver.url, "--tenant", TENANT,
                                *(arg for kind in types for arg in ("--type", kind))])  # fmt: skip
    assert said.exit_code == 0, said.output
    receiver.secret = re.search(r"whsec_\S+", said.output).group()  # type: ignore[union-attr]
    return re.search(r"ep_[0-9a-f]+", said.output).group()  # type: ignore[union-attr]


def run_at(store: Stores, now: datetime) -> int:
    """One delivery run as of ``now``: the deliveries it made."""
    due = outgoing(store.connection, now, Decimal(20))

    async def send() -> list:  # type: ignore[type-arg]
        return list(await asyncio.gather(*(deliver(d) for d in due)))

    outcomes = asyncio.run(send()) if due else []
    record(store.connection, outcomes, now)
    return len(due)


@pytest.mark.usefixtures("feed")
def test_every_fact_is_delivered_signed_once_retried_and_replayed(
    store_environment: Stores,
) -> None:
    store = store_environment
    runner = CliRunner()
    with receiving() as receiver:
        endpoint = added(runner, receiver)
        today = datetime.now(UTC).date()
        store.sources.grants.write([
            Grant(TENANT, "G-SMALL", "cust-c", "", "USD", Decimal("0.01"), 0, AUG,
                  reason="used up on the first invoice"),
            Grant(TENANT, "G-OLD", "cust-a", "", "EUR", Decimal("5"), 0, AUG, today,
                  reason="expires today, unused"),
        ])  # fmt: skip
        close_period(store.sources, BOOK, AUG)
        close_period(store.sources, BOOK, AUG, finalize=True)
        finalized = {i.subscription: i for i in store.sources.ledger.invoices([AUG])}
        credited = runner.invoke(main, ["invoices", "credit", finalized["c"].invoice_id,
                                        "--line", "1", "--reason", "goodwill"])  # fmt: skip
        assert credited.exit_code == 0, credited.output
        now = datetime.now(UTC)
        store.subscriptions.record_changes(
            [Change(TENANT, "a", now, "plan changed", now + timedelta(days=1), "scale")]
        )
        AlertStore(store.connection).write_crossings([Crossing(
            "cross-1", TENANT, "a", "calls-500", 1, date(now.year, now.month, 1), "quantity",
            Decimal(500), Decimal(612), now, 0,
        )])  # fmt: skip

        receiver.failing = 2  # the first two attempts of this run are answered 500
        delivered = runner.invoke(main, ["webhooks", "deliver"])
        assert delivered.exit_code == 0, delivered.output
        expected = {kinds.INVOICE_DRAFTED: 3, kinds.INVOICE_FINALIZED: 3,
                    kinds.INVOICE_CREDITED: 1, kinds.SUBSCRIPTION_CHANGED: 1,
                    kinds.ALERT_CROSSED: 1, kinds.CREDITS_LOW: 1,
                    kinds.CREDITS_EXPIRED: 1}  # fmt: skip
        total = sum(expected.values())
        assert f"{total} due, {total - 2} delivered, 2 to retry" in delivered.output
        assert run_at(store, datetime.now(UTC)) == 0, "the failed two wait for their retry"
        assert run_at(store, datetime.now(UTC) + timedelta(seconds=6)) == 2
        assert run_at(store, datetime.now(UTC) + timedelta(minutes=10)) == 0

        got = receiver.received
        assert all(r.verified for r in got)
        assert Counter(r.type for r in got) == expected
        assert len({r.id for r in got}) == total, "one message per fact, each delivered once"
        crossing = next(r for r in got if r.type == kinds.ALERT_CROSSED)
        assert crossing.body["data"] == {"subscription": "a", "rule": "calls-500",
                                         "metric": "quantity", "threshold": "500",
                                         "value": "612", "period": f"{now:%Y-%m}",
                                         "crossing": "cross-1"}  # fmt: skip
        c_final = next(r for r in got if r.type == kinds.INVOICE_FINALIZED
                       and r.body["data"]["subscription"] == "c")  # fmt: skip
        assert Decimal(c_final.body["data"]["total"]) == finalized["c"].total

        listed = runner.invoke(main, ["webhooks", "deliveries", "--tenant", TENANT,
                                      "--format", "json"])  # fmt: skip
        rows = json.loads(listed.output)
        assert len(rows) == total and {r["state"] for r in rows} == {"delivered"}
        assert sorted(r["attempts"] for r in rows)[-2:] == [2, 2], "500 first, then 204"

        # A replay sends the same message, with the same id, once more.
        replayed = crossing.id
        said = runner.invoke(main, ["webhooks", "replay", replayed, "--tenant", TENANT])
        assert said.exit_code == 0 and "1 deliveries" in said.output, said.output
        assert run_at(store, datetime.now(UTC)) == 1
        assert receiver.ids().count(replayed) == 2

        # Facts are read again on every run, and give no new message; a later endpoint of
        # one type hears only of what happens after it is made.
        store.sources.ledger.write(store.sources.ledger.invoices([AUG]))
        assert run_at(store, datetime.now(UTC)) == 0
        with receiving() as alerts_only:
            second = added(runner, alerts_only, kinds.ALERT_CROSSED)
            later = datetime.now(UTC)
            store.subscriptions.record_changes([Change(TENANT, "b", later, "cancelled", later,
                                                       "scale")])  # fmt: skip
            AlertStore(store.connection).write_crossings([Crossing(
                "cross-2", TENANT, "b", "calls-500", 1, date(later.year, later.month, 1),
                "quantity", Decimal(500), Decimal(501), later, 0,
            )])  # fmt: skip
            assert run_at(store, datetime.now(UTC)) == 3  # both to the first, one to this
            assert [r.type for r in alerts_only.received] == [kinds.ALERT_CROSSED]
            assert alerts_only.received[0].verified

    removed = runner.invoke(main, ["webhooks", "remove", second, "--tenant", TENANT])
    assert removed.exit_code == 0
    listed = runner.invoke(main, ["webhooks", "list", "--tenant", TENANT, "--format", "json"])
    assert [e["endpoint"] for e in json.loads(listed.output)] == [endpoint]


@pytest.mark.usefixtures("feed")
def test_a_receiver_that_never_answers_is_given_up_after_about_three_days(
    store_environment: Stores,
) -> None:
    store = store_environment
    runner = CliRunner()
    with receiving() as receiver:
        added(runner, receiver, kinds.SUBSCRIPTION_CHANGED)
    # The receiver is gone: every attempt finds nobody.
    now = datetime.now(UTC)
    store.subscriptions.record_changes([Change(TENANT, "a", now, "renewed", None, "growth")])
    attempts, at = 0, now
    while (made := run_at(store, at)) or at < now + timedelta(days=4):
        attempts += made
        at += timedelta(minutes=30)
    assert attempts == 10
    listed = runner.invoke(main, ["webhooks", "deliveries", "--tenant", TENANT,
                                  "--format", "json"])  # fmt: skip
    (row,) = json.loads(listed.output)
    assert row["state"] == "failed" and row["attempts"] == 10
    assert "ConnectError" in row["last"]


def test_bad_endpoints_are_refused_with_a_reason(store_environment: Stores) -> None:
    runner = CliRunner()
    for url, types, problem in (
        ("ftp://example.com/x", [], "not an http(s) address"),
        ("https://example.com/x", ["invoice.paid"], "no event type invoice.paid"),
    ):
        said = runner.invoke(main, ["webhooks", "add", url, "--tenant", TENANT,
                                    *(a for t in types for a in ("--type", t))])  # fmt: skip
        assert said.exit_code == 1 and problem in said.output, said.output
    said = runner.invoke(main, ["webhooks", "replay", "msg_nope", "--tenant", TENANT])
    assert said.exit_code == 1 and "no message" in said.output
