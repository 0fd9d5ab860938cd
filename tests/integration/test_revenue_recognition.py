"""Revenue recognition over the real store: a period with a mid-period upgrade, a
subscription anchored on the 15th and a credit note. Each invoice's schedule sums exactly
to its subtotal; a fixed fee is earned by day (the anchored one in two months); a credit
note takes back from where its line was earned; and the command prints the balances and
writes the ledger's CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from invoicing.closing import close_period
from invoicing.credit_ledger import issue_credit_note
from invoicing.invoice import FIXED_FEE
from invoicing.reports import revenue_recognition
from meterline.cli import main
from rating.period import midnight
from subscriptions.lifecycle import change_plan
from subscriptions.model import Subscription
from tests.integration.test_invoices import (
    AUG,
    BOOK,
    OCT,
    SEP,
    TENANT,
    Feed,
    at,
    invoices,
    seed_scenario,
)
from tests.stores import Stores

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def feed(store_environment: Stores) -> Feed:
    return seed_scenario(store_environment)


def test_each_invoice_is_recognized_exactly_fees_by_day_and_credits_where_they_were_earned(
    feed: Feed, store_environment: Stores, tmp_path: Path
) -> None:
    store = store_environment
    upgraded = Subscription(TENANT, "e", "cust-a", "starter", at(date(2026, 8, 1), 0))
    upgraded = change_plan(upgraded, "growth", midnight(date(2026, 9, 11)), earliest=midnight(AUG),
                           last_finalized=None, book=BOOK)  # fmt: skip
    anchored = Subscription(TENANT, "m", "cust-a", "growth", at(date(2026, 8, 15), 0),
                            anchor_day=15)  # fmt: skip
    store.subscriptions.write([replace(upgraded, version=5), replace(anchored, version=8)])
    feed.send([("e", "api_calls", 700, at(date(2026, 9, 12)), {}),
                   ("m", "api_calls", 900, at(date(2026, 9, 10)), {})])  # fmt: skip
    for period in (AUG, SEP):
        close_period(store.sources, BOOK, period, finalize=True, clock=lambda: NOW)
    september = invoices(store, SEP)
    fee = next(n for n, x in enumerate(september["e"].lines, 1) if x.kind == FIXED_FEE)
    note = issue_credit_note(store.sources.ledger, store.sources.credits,
                             september["e"].invoice_id, {fee: Decimal("1.00")},
                             reason="goodwill", today=NOW.date())  # fmt: skip

    rows, entries = revenue_recognition(store.sources, BOOK, OCT, 3)
    issued = [*invoices(store, AUG).values(), *september.values()]
    for invoice in issued:
        mine = [e.amount for e in entries if e.document == invoice.invoice_id]
        assert sum(mine, Decimal(0)) == invoice.subtotal, invoice.invoice_id
    assert sum(e.amount for e in entries if e.document == note.credit_note_id) == -note.subtotal

    # m's August period is Aug 15 to Sep 14: growth's 29.00 fee, 17 days in August, 14 in
    # September, each part rounded so that the two make 29.00.
    m_august = invoices(store, AUG)["m"].invoice_id
    m_fee = [(e.month, e.amount) for e in entries
             if e.document == m_august and e.kind == FIXED_FEE]  # fmt: skip
    assert m_fee == [(AUG, Decimal("15.90")), (SEP, Decimal("13.10"))]
    # e was upgraded on Sep 11: starter's days and growth's each earn their own fee, and
    # the credit comes off growth's fee in September, where it was earned.
    e_fees = {(e.plan, e.month): e.amount for e in entries
              if e.document == september["e"].invoice_id and e.kind == FIXED_FEE}  # fmt: skip
    assert set(e_fees) <= {("starter", SEP), ("growth", SEP)} and ("growth", SEP) in e_fees
    assert [(e.month, e.amount) for e in entries if e.document == note.credit_note_id] == [
        (SEP, Decimal("-1.00"))
    ]
    # Billed in November (issued then), earned in August to October: all earned, none
    # billed before November, so the deferred balance is below 0 until then.
    by_month: dict[date, Decimal] = {}
    for row in rows:
        by_month[row.month] = by_month.get(row.month, Decimal(0)) + row.recognized
    assert OCT in by_month and by_month[AUG] > 0 and all(row.deferred <= 0 for row in rows)

    runner = CliRunner()
    ledger = tmp_path / "schedule.csv"
    asked = ["report", "revenue-recognition", "--until", "2026-11", "--months", "4"]
    shown = runner.invoke(main, [*asked, "--schedule", str(ledger), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    listed = json.loads(shown.output[shown.output.index("[") :])
    november = [r for r in listed if r["month"] == "2026-11"]
    assert sum(Decimal(r["deferred"]) for r in november) == 0, "all billed, all earned"
    with ledger.open() as kept:
        booked = list(csv.DictReader(kept))
    assert sum(Decimal(r["amount"]) for r in booked) == sum(e.amount for e in entries)
    assert {r["date"] for r in booked} >= {"2026-08-31", "2026-09-30"}
    table = runner.invoke(main, ["report", "revenue-recognition", "--until", "2026-11"])
    assert table.exit_code == 0 and "Recognized per month in USD" in table.output
