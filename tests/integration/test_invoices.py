"""Invoicing against the real ClickHouse engine: a scenario with a mid-period start, a plan
version change, a subscription that ends, a minimum commitment, tax rates, a finalized
period and usage that arrives after it, checked line by line against a Decimal
computation (the rating oracle and plain Decimal proration).

Events go through the worker's own pure step (BatchProcessor) into the store, so the rated
totals are the ones the pipeline writes; no broker is needed for what is tested here.
"""

from __future__ import annotations

import csv
import ctypes.util
import io
import json
import shutil
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aggregation.batch import BatchProcessor
from aggregation.model import Record
from aggregation.state import UsageState
from base.events import EventWindow, Property, UsageEvent, encode, partition_of
from invoicing.closing import ClosingError, close_period
from invoicing.credit_ledger import CreditLedger
from invoicing.explain import explain_line
from invoicing.export import as_dict, to_csv, to_html, to_json
from invoicing.invoice import (
    DISCOUNT,
    DRAFT,
    FINALIZED,
    FIXED_FEE,
    TRUE_UP,
    USAGE,
    Invoice,
    Party,
)
from meterline.cli import main
from meterline.demo import PRICE_BOOK
from rating import oracle
from rating.loading import load_price_book
from rating.period import midnight
from rating.plans import Graduated
from rating.table import ChargeTable
from subscriptions.directory import SubscriptionDirectory
from subscriptions.lifecycle import (
    LifecycleError,
    cancel,
    change_add_on,
    change_plan,
    period_end,
    revise,
)
from subscriptions.model import Customer, Subscription
from tests.stores import Stores

pytestmark = pytest.mark.integration

BOOK = load_price_book(PRICE_BOOK)
PARTITIONS = 4
AUG, SEP, OCT = date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)
TENANT = "acme"


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def prorated(amount: str, days: int, period_days: int) -> Decimal:
    return cents(Decimal(amount) * days / period_days)


def usage(plan: str, version: int, meter: str, quantity: int) -> Decimal:
    """What the Decimal rating oracle says the quantity costs, rounded to the cent."""
    charge = BOOK.plan(plan, version).charge_for(meter)
    assert charge is not None
    return cents(oracle.rate_charge(charge, quantity, BOOK.meter(meter).scale).amount)


class Feed:
    """Events into the store the way the worker writes them: one processor keeps the
    period-to-date state, so a late event re-rates its period's total."""

    def __init__(self, store: Stores) -> None:
        self.store = store
        self.offsets = dict.fromkeys(range(PARTITIONS), 0)
        self.count = 0
        self.processor = BatchProcessor(
            UsageState(),
            SubscriptionDirectory(store.subscriptions.terms_written_since, min_interval=0).entries,
            BOOK,
            ChargeTable.compile(BOOK),
            window=EventWindow(max_age=timedelta(days=3650), max_skew=timedelta(minutes=5)),
            partitions=PARTITIONS,
        )

    def send(self, events: Iterable[tuple[str, str, int, datetime, dict[str, Property]]]) -> None:
        records = []
        for subscription, meter, quantity, moment, properties in events:
            self.count += 1
            event = UsageEvent(
                id=f"e{self.count}", tenant=TENANT, subscription=subscription, meter=meter,
                quantity=quantity, timestamp=moment, properties=properties,
            )  # fmt: skip
            partition = partition_of(event.partition_key(), PARTITIONS)
            records.append((partition, self.offsets[partition], encode(event)))
            self.offsets[partition] += 1
        result = self.processor.process(records)
        assert not result.rejected, result.rejected
        self.store.sink.write_batch(result)


@pytest.fixture
def scenario(store: Stores) -> Feed:
    return seed_scenario(store)


def seed_scenario(store: Stores) -> Feed:
    """a: growth from Aug 20 (growth v2 takes effect Sep 16), tax 8.25%.
    b: scale (EUR, commitment 40) all year, ends Sep 21, tax 20%.
    c: starter all year, no tax."""
    store.subscriptions.write(
        [Subscription(TENANT, "a", "cust-a", "growth", at(date(2026, 8, 20), 0), version=1),
         Subscription(TENANT, "b", "cust-b", "scale", at(date(2026, 1, 1), 0),
                      ended_at=at(date(2026, 9, 21), 0), version=1),
         Subscription(TENANT, "c", "cust-c", "starter", at(date(2026, 1, 1), 0), version=1)]
    )  # fmt: skip
    store.subscriptions.write_customers(
        [Customer(TENANT, "cust-a", "Alpha Ltd", "crm-1", Decimal("8.25")),
         Customer(TENANT, "cust-b", "Beta GmbH", "crm-2", Decimal(20)),
         Customer(TENANT, "cust-c", "Gamma Inc", "crm-3", Decimal(0))],
        version=1,
    )  # fmt: skip
    feed = Feed(store)
    feed.send(
        [("a", "api_calls", 1500, at(date(2026, 8, 25)), {}),
         ("b", "api_calls", 1000, at(date(2026, 8, 3)), {}),
         ("c", "tokens", 300_000, at(date(2026, 8, 10)), {"model": "large"}),
         ("a", "api_calls", 800, at(date(2026, 9, 5)), {}),
         ("a", "api_calls", 2000, at(date(2026, 9, 20)), {})]
    )  # fmt: skip
    return feed


def lines_of(invoice: Invoice) -> dict[tuple[str, str, str, int, date], Decimal]:
    """(kind, item, group, plan version, period billed) -> amount."""
    return {
        (line.kind, line.item, line.group, line.plan_version, line.applies_to): line.amount
        for line in invoice.lines
    }


def invoices(store: Stores, period: date) -> dict[str, Invoice]:
    return {i.subscription: i for i in store.sources.ledger.invoices([period])}


def by_plan(store: Stores, period: date, subscription: str) -> dict[tuple[str, int, str], Decimal]:
    """(plan, version, kind) -> amount of the subscription's invoice for ``period``."""
    lines = invoices(store, period)[subscription].lines
    return {(x.plan, x.plan_version, x.kind): x.amount for x in lines}


def test_a_closed_period_bills_prorated_fees_usage_and_commitments_with_tax(
    scenario: Feed, store: Stores
) -> None:
    report = close_period(store.sources, BOOK, AUG)
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    august = invoices(store, AUG)

    assert lines_of(august["a"]) == {
        (USAGE, "api_calls", "", 1, AUG): usage("growth", 1, "api_calls", 1500),
        (FIXED_FEE, "platform", "", 1, AUG): prorated("29", 12, 31),  # from Aug 20
    }
    b_usage = usage("scale", 1, "api_calls", 1000)
    # The scale plan's payments charge bills its first tier's flat fee with no payment at
    # all (zero_usage: first_tier), as a line of zero volume.
    b_payments = usage("scale", 1, "payments", 0)
    assert b_payments == Decimal("5.00")
    assert lines_of(august["b"]) == {
        (USAGE, "api_calls", "", 1, AUG): b_usage,
        (USAGE, "payments", "", 1, AUG): b_payments,
        (FIXED_FEE, "support", "", 1, AUG): Decimal("15.00"),
        (TRUE_UP, "commitment", "", 1, AUG): Decimal(40) - Decimal(15) - b_usage - b_payments,
    }
    assert lines_of(august["c"]) == {
        (USAGE, "tokens", '{"model":"large"}', 1, AUG): usage("starter", 1, "tokens", 300_000),
    }
    for invoice, rate in ((august["a"], "8.25"), (august["b"], "20"), (august["c"], "0")):
        assert all(line.tax == cents(line.amount * Decimal(rate) / 100) for line in invoice.lines)
        assert invoice.total == invoice.subtotal + invoice.tax
        assert invoice.subtotal == sum(line.amount for line in invoice.lines)
    assert august["b"].currency == "EUR" and august["a"].customer_name == "Alpha Ltd"


def test_a_plan_version_change_and_an_end_split_the_period_by_day(
    scenario: Feed, store: Stores
) -> None:
    close_period(store.sources, BOOK, SEP)
    september = invoices(store, SEP)

    assert lines_of(september["a"]) == {
        (USAGE, "api_calls", "", 1, SEP): usage("growth", 1, "api_calls", 800),
        (USAGE, "api_calls", "", 2, SEP): usage("growth", 2, "api_calls", 2000),
        (FIXED_FEE, "platform", "", 1, SEP): prorated("29", 15, 30),  # until Sep 16
        (FIXED_FEE, "platform", "", 2, SEP): prorated("39", 15, 30),  # from Sep 16
    }
    fee = prorated("15", 20, 30)  # b ends Sep 21: 20 of 30 days
    # A usage charge's flat fee is not prorated, at zero usage as at any other.
    payments = usage("scale", 1, "payments", 0)
    assert lines_of(september["b"]) == {
        (USAGE, "payments", "", 1, SEP): payments,
        (FIXED_FEE, "support", "", 1, SEP): fee,
        (TRUE_UP, "commitment", "", 1, SEP): prorated("40", 20, 30) - fee - payments,
    }
    assert lines_of(september["c"]) == {}  # starter has no fixed fee; c had no usage
    close_period(store.sources, BOOK, OCT)
    assert set(invoices(store, OCT)) == {"a", "c"}  # b ended in September


def test_closing_twice_writes_nothing_and_finalizing_twice_finalizes_nothing(
    scenario: Feed, store: Stores
) -> None:
    close_period(store.sources, BOOK, AUG)
    first = invoices(store, AUG)
    again = close_period(store.sources, BOOK, AUG)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert invoices(store, AUG) == first  # same revisions, same lines

    final = close_period(store.sources, BOOK, AUG, finalize=True)
    assert (final.finalized, final.already_final) == (3, 0)
    frozen = invoices(store, AUG)
    assert {i.status for i in frozen.values()} == {"finalized"}
    assert {s: i.lines for s, i in frozen.items()} == {s: i.lines for s, i in first.items()}
    twice = close_period(store.sources, BOOK, AUG, finalize=True)
    assert (twice.finalized, twice.already_final) == (0, 3)
    assert close_period(store.sources, BOOK, AUG).already_final == 3
    runs = store.sources.ledger.runs()
    assert runs["close"][0] == 3 and runs["finalize"][0] == 2


def test_usage_that_arrives_after_finalization_is_billed_once_on_the_next_invoice(
    scenario: Feed, store: Stores
) -> None:
    close_period(store.sources, BOOK, AUG, finalize=True)
    finalized = invoices(store, AUG)
    scenario.send(
        [("a", "api_calls", 700, at(date(2026, 8, 30)), {}),
         ("b", "api_calls", 3000, at(date(2026, 8, 4)), {}),
         ("c", "active_users", 1, at(date(2026, 8, 12)), {"user": "u1"}),
         ("c", "active_users", 1, at(date(2026, 8, 13)), {"user": "u2"})]
    )  # fmt: skip

    assert close_period(store.sources, BOOK, AUG).already_final == 3
    assert invoices(store, AUG) == finalized  # a finalized invoice never changes
    close_period(store.sources, BOOK, SEP)
    september = invoices(store, SEP)

    def adjustments(sub: str) -> dict[tuple[str, str, str, int, date], Decimal]:
        return {k: v for k, v in lines_of(september[sub]).items() if k[4] == AUG}

    assert adjustments("a") == {
        (USAGE, "api_calls", "", 1, AUG): usage("growth", 1, "api_calls", 2200)
        - usage("growth", 1, "api_calls", 1500),
    }
    before, after = usage("scale", 1, "api_calls", 1000), usage("scale", 1, "api_calls", 4000)
    assert adjustments("b") == {  # more usage, so less commitment shortfall
        (USAGE, "api_calls", "", 1, AUG): after - before,
        (TRUE_UP, "commitment", "", 1, AUG): before - after,
    }
    # Two active users are within starter's five included: the line says so, at 0.00.
    assert adjustments("c") == {(USAGE, "active_users", "", 1, AUG): Decimal("0.00")}
    assert [line.quantity for line in september["c"].lines if line.applies_to == AUG] == [2]
    adjustment = next(line for line in september["a"].lines if line.applies_to == AUG)
    assert adjustment.quantity == 700
    assert adjustment.description == "adjustment for 2026-08: api_calls"

    close_period(store.sources, BOOK, SEP, finalize=True)
    close_period(store.sources, BOOK, OCT)
    october = invoices(store, OCT)
    assert all(line.applies_to == OCT for i in october.values() for line in i.lines), (
        "an adjustment billed on a finalized invoice is not billed again"
    )


def test_each_line_is_explained_by_the_events_behind_it(scenario: Feed, store: Stores) -> None:
    close_period(store.sources, BOOK, SEP)
    a = invoices(store, SEP)["a"]
    number = 1 + next(n for n, line in enumerate(a.lines) if line.plan_version == 2)
    explained = explain_line(store.sources, BOOK, a, number)
    assert explained.agrees is True
    assert [(w.start.date(), w.events, w.quantity) for w in explained.windows] == [
        (date(2026, 9, 20), 1, Decimal(2000))
    ]
    fee = explain_line(store.sources, BOOK, a, len(a.lines))
    assert "15/30" in fee.facts[-1] and "39" in fee.facts[-1]

    close_period(store.sources, BOOK, SEP, finalize=True)
    scenario.send([("a", "api_calls", 5, at(date(2026, 9, 29)), {})])
    close_period(store.sources, BOOK, OCT)
    october = invoices(store, OCT)["a"]
    late = next(n for n, line in enumerate(october.lines, 1) if line.applies_to == SEP)
    explained = explain_line(store.sources, BOOK, october, late)
    assert sum(w.late_events for w in explained.windows) == 1
    assert "arrived after the 2026-09 invoice was finalized" in explained.facts[-1]


def test_a_period_that_has_not_ended_cannot_be_finalized(scenario: Feed, store: Stores) -> None:
    this_month = datetime.now(UTC).date().replace(day=1)
    with pytest.raises(ClosingError, match="has not ended"):
        close_period(store.sources, BOOK, this_month, finalize=True)


def test_exports_carry_every_line_with_exact_amounts(scenario: Feed, store: Stores) -> None:
    close_period(store.sources, BOOK, SEP)
    found = store.sources.ledger.invoices([SEP])
    exported = json.loads(to_json(found))
    assert [(i["subscription"], i["total"]) for i in exported] == [
        (i.subscription, f"{i.total:.2f}") for i in found
    ]
    rows = list(csv.DictReader(io.StringIO(to_csv(found))))
    assert len(rows) == sum(len(i.lines) for i in found)
    assert sum(Decimal(r["amount"]) for r in rows) == sum(i.subtotal for i in found)
    page = to_html(found)
    assert all(i.invoice_id in page for i in found) and "DRAFT" in page


def test_the_invoice_commands_work_from_a_shell(scenario: Feed, store_environment: Stores) -> None:
    store = store_environment
    runner = CliRunner()

    closed = runner.invoke(main, ["invoices", "close", "--period", "2026-09"])
    assert closed.exit_code == 0 and "3 drafts created" in closed.output, closed.output
    a = invoices(store, SEP)["a"]
    shown = runner.invoke(main, ["invoices", "show", a.invoice_id, "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)[0]["total"] == f"{a.total:.2f}"
    explained = runner.invoke(main, ["invoices", "explain", a.invoice_id, "1"])
    assert explained.exit_code == 0 and "they agree" in explained.output, explained.output
    html = runner.invoke(main, ["invoices", "export", "--period", "2026-09", "--format", "html"])
    assert html.exit_code == 0 and a.invoice_id in html.output
    final = runner.invoke(main, ["invoices", "finalize", "--period", "2026-09", "--yes"])
    assert final.exit_code == 0 and "finalized 3 invoices" in final.output, final.output
    reports = (
        ["report", "top", "--period", "2026-09"],
        ["report", "revenue", "--until", "2026-09"],
        ["report", "usage", "--period", "2026-09"],
        ["report", "mrr", "--until", "2026-09", "--months", "2"],
    )
    for command in reports:
        reported = runner.invoke(main, command)
        assert reported.exit_code == 0 and "█" in reported.output, reported.output

    for bad, message in ((["invoices", "show", "nonsense"], "is not an invoice id"),
                         (["invoices", "show", "INV-202609-0000000000000000"], "no invoice"),
                         (["invoices", "explain", a.invoice_id, "99"], "there is no line 99"),
                         (["invoices", "finalize", "--period", "2999-01", "--yes"],
                          "has not ended")):  # fmt: skip
        refused = runner.invoke(main, bad)
        assert refused.exit_code == 1 and message in refused.output, refused.output
        assert "Traceback" not in refused.output


def test_a_subscription_is_cancelled_renewed_and_its_history_kept(
    scenario: Feed, store_environment: Stores, tmp_path: Path
) -> None:
    store, runner = store_environment, CliRunner()
    subs = tmp_path / "subs.csv"
    subs.write_text(
        "tenant,subscription,customer,plan,started_at\nacme,d,cust-a,growth,2026-08-01\n"
    )
    assert runner.invoke(main, ["subscriptions", "import", str(subs)]).exit_code == 0

    cancelled = runner.invoke(main, ["subscriptions", "cancel", "d", "--tenant", TENANT,
                                     "--at", "2026-09-11"])  # fmt: skip
    assert cancelled.exit_code == 0 and "ends 2026-09-11" in cancelled.output, cancelled.output
    close_period(store.sources, BOOK, SEP)
    assert lines_of(invoices(store, SEP)["d"]) == {
        (FIXED_FEE, "platform", "", 1, SEP): prorated("29", 10, 30),  # Sep 1 to 11
    }
    close_period(store.sources, BOOK, AUG, finalize=True)
    into_finalized = runner.invoke(main, ["subscriptions", "cancel", "d", "--tenant", TENANT,
                                          "--at", "2026-08-20"])  # fmt: skip
    assert into_finalized.exit_code == 1 and "falls in 2026-08" in into_finalized.output
    renewed = runner.invoke(main, ["subscriptions", "renew", "d", "--tenant", TENANT])
    assert renewed.exit_code == 0, renewed.output
    close_period(store.sources, BOOK, SEP)
    assert lines_of(invoices(store, SEP)["d"]) == {
        (FIXED_FEE, "platform", "", 1, SEP): prorated("29", 15, 30),
        (FIXED_FEE, "platform", "", 2, SEP): prorated("39", 15, 30),
    }
    shown = runner.invoke(main, ["subscriptions", "show", "d", "--tenant", TENANT])
    assert shown.exit_code == 0, shown.output
    assert [c.kind for c in store.subscriptions.history(TENANT, "d")] == [
        "imported",
        "cancelled",
        "renewed",
    ]
    missing = runner.invoke(main, ["subscriptions", "cancel", "nobody", "--tenant", TENANT])
    assert missing.exit_code == 1 and "no subscription 'nobody'" in missing.output

    store.subscriptions.write_customers(
        [Customer(TENANT, "cust-eur", "Euro AG", currency="EUR")], version=2
    )
    euro = tmp_path / "euro.csv"
    euro.write_text(
        "tenant,subscription,customer,plan,started_at\nacme,f,cust-eur,growth,2026-08-01\n"
    )
    refused = runner.invoke(main, ["subscriptions", "import", str(euro)])
    assert refused.exit_code == 1 and "billed in EUR, not USD" in refused.output, refused.output
    assert store.subscriptions.subscription(TENANT, "f") is None


def test_an_upgrade_mid_period_and_a_downgrade_at_its_end_price_each_day_by_its_plan(
    scenario: Feed, store_environment: Stores
) -> None:
    store = store_environment
    row = Subscription(TENANT, "e", "cust-a", "starter", at(date(2026, 8, 1), 0))
    for day, plan in ((date(2026, 9, 11), "growth"), (OCT, "starter")):
        row = change_plan(
            row, plan, midnight(day), earliest=midnight(AUG), last_finalized=None, book=BOOK
        )
    store.subscriptions.write([replace(row, version=5)])
    scenario.send(
        [("e", "api_calls", 100, at(date(2026, 9, 5)), {}),  # starter
         ("e", "api_calls", 700, at(date(2026, 9, 12)), {}),  # growth v1
         ("e", "api_calls", 2000, at(date(2026, 9, 20)), {}),  # growth v2 (from Sep 16)
         ("e", "api_calls", 50, at(date(2026, 10, 3)), {})]  # starter again
    )  # fmt: skip
    close_period(store.sources, BOOK, SEP)
    close_period(store.sources, BOOK, OCT)

    september = by_plan(store, SEP, "e")
    assert september == {
        ("starter", 1, USAGE): usage("starter", 1, "api_calls", 100),
        ("growth", 1, USAGE): usage("growth", 1, "api_calls", 700),
        ("growth", 2, USAGE): usage("growth", 2, "api_calls", 2000),
        ("growth", 1, FIXED_FEE): prorated("29", 5, 30),
        ("growth", 2, FIXED_FEE): prorated("39", 15, 30),
        # The starter plan's launch discount, 10% of its slice's 0.04: under half a cent.
        ("starter", 1, DISCOUNT): Decimal(0),
    }
    october = by_plan(store, OCT, "e")
    assert october == {("starter", 1, USAGE): usage("starter", 1, "api_calls", 50),
                       ("starter", 1, DISCOUNT): Decimal(0)}  # fmt: skip

    runner = CliRunner()
    past = runner.invoke(main, ["subscriptions", "change", "e", "--tenant", TENANT, "--plan",
                                "growth", "--on", "2026-10-20"])  # fmt: skip
    assert past.exit_code == 1 and "the earliest is" in past.output, past.output
    euros = runner.invoke(main, ["subscriptions", "change", "e", "--tenant", TENANT,
                                 "--plan", "scale", "--on", "2099-01-01"])  # fmt: skip
    assert euros.exit_code == 1 and "billed in USD and scale is priced in EUR" in euros.output
    scheduled = runner.invoke(main, ["subscriptions", "change", "e", "--tenant", TENANT,
                                     "--plan", "growth", "--on", "2099-01-01"])  # fmt: skip
    assert scheduled.exit_code == 0 and "growth from 2099-01-01" in scheduled.output
    changed = store.subscriptions.subscription(TENANT, "e")
    assert changed is not None and changed.changes[-1] == (midnight(date(2099, 1, 1)), "growth")
    unknown = runner.invoke(main, ["subscriptions", "change", "e", "--tenant", TENANT,
                                   "--plan", "platinum", "--on", "2099-02-01"])  # fmt: skip
    assert unknown.exit_code == 1 and "not in the price book" in unknown.output


def uplifted(version: int, quantity: int, percent: str) -> Decimal:
    """The oracle on growth's api_calls tiers with each price times (1 + percent/100)
    (exact for these prices, so no rounding to the nano-unit is needed)."""
    charge = BOOK.plan("growth", version).charge_for("api_calls")
    assert isinstance(charge, Graduated)
    factor = 1 + Decimal(percent) / 100
    tiers = tuple(tier.model_copy(update={"unit_price": tier.unit_price * factor,
                                          "flat_fee": tier.flat_fee * factor})
                  for tier in charge.tiers)  # fmt: skip
    return cents(oracle.rate_charge(charge.model_copy(update={"tiers": tiers}), quantity, 0).amount)


def test_a_price_revision_by_a_percentage_prices_each_day_by_the_revised_plan(
    scenario: Feed, store_environment: Stores
) -> None:
    """growth from Aug 1, +7.5% from Sep 11; growth v2 (Sep 16) is revised as well."""
    store = store_environment
    row = revise(Subscription(TENANT, "r", "cust-a", "growth", at(AUG, 0)), Decimal("7.5"),
                 date(2026, 9, 11), earliest=AUG, last_finalized=None, book=BOOK)  # fmt: skip
    store.subscriptions.write([replace(row, version=6)])
    scenario.send(
        [("r", "api_calls", 1200, at(date(2026, 9, 5)), {}),  # list price
         ("r", "api_calls", 700, at(date(2026, 9, 12)), {}),  # growth v1 +7.5%
         ("r", "api_calls", 2000, at(date(2026, 9, 20)), {})]  # growth v2 +7.5%
    )  # fmt: skip
    close_period(store.sources, BOOK, SEP)

    september = by_plan(store, SEP, "r")
    assert september == {
        ("growth", 1, USAGE): usage("growth", 1, "api_calls", 1200),
        ("growth@+7.5%", 1, USAGE): uplifted(1, 700, "7.5"),
        ("growth@+7.5%", 2, USAGE): uplifted(2, 2000, "7.5"),
        ("growth", 1, FIXED_FEE): prorated("29", 10, 30),
        ("growth@+7.5%", 1, FIXED_FEE): prorated("31.175", 5, 30),
        ("growth@+7.5%", 2, FIXED_FEE): prorated("41.925", 15, 30),
    }

    runner = CliRunner()
    compounded = runner.invoke(main, ["subscriptions", "revise", "r", "--tenant", TENANT,
                                      "--percent", "-2", "--on", "2099-01-01"])  # fmt: skip
    assert compounded.exit_code == 0, compounded.output
    assert "growth@+5.35% from 2099-01-01" in compounded.output
    history = store.subscriptions.history(TENANT, "r")
    assert history[-1].kind == "prices revised" and history[-1].plan == "growth@+5.35%"
    for arguments, problem in (
        (["--percent", "0"], "changes no price"),
        (["--percent", "ten"], "is not a number"),
        (["--percent", "-100"], "above -100%"),
        (["--percent", "3", "--on", "2026-10-20"], "the earliest is"),
        (["--percent", "3", "--on", "2099-02-01", "--at-period-end"], "not both"),
    ):
        refused = runner.invoke(main, ["subscriptions", "revise", "r", "--tenant", TENANT,
                                       *arguments])  # fmt: skip
        assert refused.exit_code != 0 and problem in refused.output, refused.output
        assert "Traceback" not in refused.output


def test_an_add_on_taken_and_removed_mid_period_bills_its_charges_and_fees_by_day(
    scenario: Feed, store_environment: Stores
) -> None:
    """growth from Aug 1; storage and premium support from Sep 11; support removed from
    Sep 21. growth v2 takes effect on Sep 16, add-ons and all."""
    store = store_environment
    row = Subscription(TENANT, "x", "cust-a", "growth", at(AUG, 0))
    for day, adding, add_on in ((date(2026, 9, 11), True, "storage"),
                                (date(2026, 9, 11), True, "premium_support"),
                                (date(2026, 9, 21), False, "premium_support")):  # fmt: skip
        row = change_add_on(row, add_on, day, adding=adding, earliest=AUG, last_finalized=None,
                            book=BOOK)  # fmt: skip
    assert row.changes == ((midnight(date(2026, 9, 11)), "growth+premium_support+storage"),
                           (midnight(date(2026, 9, 21)), "growth+storage"))  # fmt: skip
    store.subscriptions.write([replace(row, version=7)])
    scenario.send(
        [("x", "api_calls", 300, at(date(2026, 9, 5)), {}),
         ("x", "storage_gb", 25, at(date(2026, 9, 12)), {}),  # peak of Sep 11-15
         ("x", "storage_gb", 18, at(date(2026, 9, 13)), {}),
         ("x", "storage_gb", 40, at(date(2026, 9, 25)), {})]  # peak of Sep 21-30
    )  # fmt: skip
    close_period(store.sources, BOOK, SEP)

    both, storage = "growth+premium_support+storage", "growth+storage"
    september = {
        (x.plan, x.plan_version, x.kind, x.item): x.amount for x in invoices(store, SEP)["x"].lines
    }
    storage_charge = BOOK.add_on("storage").charges[0]
    assert september == {
        ("growth", 1, USAGE, "api_calls"): usage("growth", 1, "api_calls", 300),
        (both, 1, USAGE, "storage_gb"): cents(oracle.rate_charge(storage_charge, 25, 0).amount),
        (storage, 2, USAGE, "storage_gb"): cents(oracle.rate_charge(storage_charge, 40, 0).amount),
        ("growth", 1, FIXED_FEE, "platform"): prorated("29", 10, 30),
        (both, 1, FIXED_FEE, "platform"): prorated("29", 5, 30),
        (both, 1, FIXED_FEE, "premium_support"): prorated("49", 5, 30),
        (both, 2, FIXED_FEE, "platform"): prorated("39", 5, 30),
        (both, 2, FIXED_FEE, "premium_support"): prorated("49", 5, 30),
        (storage, 2, FIXED_FEE, "platform"): prorated("39", 10, 30),
    }
    assert september[(storage, 2, USAGE, "storage_gb")] == Decimal("7.50")  # 30 GB over 10

    runner = CliRunner()
    added = runner.invoke(main, ["subscriptions", "add-charge", "x", "--tenant", TENANT,
                                 "--add-on", "premium_support", "--on", "2099-01-01"])  # fmt: skip
    assert added.exit_code == 0 and "growth+premium_support+storage from 2099-01-01" in added.output
    for command, add_on, problem in (
        ("remove-charge", "platinum", "no add-on platinum to remove"),
        ("add-charge", "platinum", "add-on 'platinum' is not in the price book"),
        ("add-charge", "storage", "has the add-on storage already"),
    ):
        refused = runner.invoke(main, ["subscriptions", command, "x", "--tenant", TENANT,
                                       "--add-on", add_on, "--on", "2099-02-01"])  # fmt: skip
        assert refused.exit_code == 1 and problem in refused.output, refused.output


def test_a_subscription_anchored_on_the_15th_is_billed_from_the_15th_to_the_14th(
    scenario: Feed, store: Stores
) -> None:
    """growth from Aug 15, periods starting on the 15th: period "2026-08" is Aug 15 to
    Sep 14, "2026-09" is Sep 15 to Oct 14 (growth v2 from Sep 16)."""
    row = Subscription(TENANT, "m", "cust-a", "growth", at(date(2026, 8, 15), 0), anchor_day=15)
    store.subscriptions.write([replace(row, version=8)])
    scenario.send(
        [("m", "api_calls", 900, at(date(2026, 9, 10)), {}),  # period 2026-08
         ("m", "api_calls", 400, at(date(2026, 9, 15)), {}),  # period 2026-09, growth v1
         ("m", "api_calls", 2500, at(date(2026, 10, 14)), {})]  # period 2026-09, growth v2
    )  # fmt: skip
    close_period(store.sources, BOOK, AUG)
    close_period(store.sources, BOOK, SEP)

    def billed(period: date) -> dict[tuple[int, str, str], Decimal]:
        invoice = invoices(store, period)["m"]
        return {(x.plan_version, x.kind, x.item): x.amount for x in invoice.lines}

    assert billed(AUG) == {
        (1, USAGE, "api_calls"): usage("growth", 1, "api_calls", 900),
        (1, FIXED_FEE, "platform"): cents(Decimal(29)),  # Aug 15 to Sep 14: the whole period
    }
    assert billed(SEP) == {
        (1, USAGE, "api_calls"): usage("growth", 1, "api_calls", 400),
        (2, USAGE, "api_calls"): usage("growth", 2, "api_calls", 2500),
        (1, FIXED_FEE, "platform"): prorated("29", 1, 30),  # Sep 15
        (2, FIXED_FEE, "platform"): prorated("39", 29, 30),  # Sep 16 to Oct 14
    }
    september = invoices(store, SEP)["m"]
    exported = json.loads(to_json([september]))[0]
    assert (exported["period"], exported["billing_from"], exported["billing_until"]) == (
        "2026-09", "2026-09-15", "2026-10-15"
    )  # fmt: skip
    assert "15 Sep 2026 to 14 Oct 2026" in to_html([september])

    early = close_period(
        store.sources, BOOK, SEP, finalize=True, clock=lambda: at(date(2026, 10, 5))
    )
    assert early.not_ended == 1 and invoices(store, SEP)["m"].status == DRAFT
    assert invoices(store, SEP)["a"].status == FINALIZED
    late = close_period(
        store.sources, BOOK, SEP, finalize=True, clock=lambda: at(date(2026, 10, 15))
    )
    assert (late.finalized, late.not_ended) == (1, 0)
    assert invoices(store, SEP)["m"].status == FINALIZED
    # The end of its period, for a cancellation at period end, is its own.
    assert period_end(at(date(2026, 10, 20)), 15) == at(date(2026, 11, 15), 0)
    with pytest.raises(LifecycleError, match="falls in 2026-09"):  # Oct 14 ends period 2026-09
        cancel(row, at(date(2026, 10, 14), 0), last_finalized=SEP)
    assert cancel(row, at(date(2026, 10, 15), 0), last_finalized=SEP).ended_at == at(OCT, 0) + (
        timedelta(days=14)
    )


def test_a_reimport_may_not_move_a_subscriptions_anchor_day(
    store_environment: Stores, tmp_path: Path
) -> None:
    path = tmp_path / "subs.csv"
    header = "tenant,subscription,customer,plan,started_at,anchor_day\n"
    path.write_text(header + "acme,n,cust-a,growth,2026-08-15,15\n")
    runner = CliRunner()
    assert runner.invoke(main, ["subscriptions", "import", str(path)]).exit_code == 0
    path.write_text(header + "acme,n,cust-a,scale,2026-08-15,1\n")
    moved = runner.invoke(main, ["subscriptions", "import", str(path)])
    assert moved.exit_code == 1 and "anchor_day 1 differs from its 15" in moved.output
    kept = store_environment.subscriptions.subscription(TENANT, "n")
    assert kept is not None and (kept.plan, kept.anchor_day) == ("growth", 15)
    shown = runner.invoke(main, ["subscriptions", "show", "n", "--tenant", TENANT])
    assert "periods start on day 15" in shown.output


def test_a_subscription_that_keeps_a_plan_version_is_moved_to_the_list_price_on_a_date(
    scenario: Feed, store: Stores
) -> None:
    """g keeps growth version 1 (growth#1) past Sep 16, when version 2 takes effect for
    everyone else, and follows the price book from Sep 21."""
    row = Subscription(TENANT, "g", "cust-a", "growth#1", at(AUG, 0))
    row = change_plan(row, "growth", midnight(date(2026, 9, 21)), earliest=midnight(AUG),
                      last_finalized=None, book=BOOK)  # fmt: skip
    store.subscriptions.write([replace(row, version=9)])
    scenario.send(
        [("g", "api_calls", 1200, at(date(2026, 9, 18)), {}),  # v1 prices, kept
         ("g", "api_calls", 600, at(date(2026, 9, 25)), {})]  # v2, as the book says
    )  # fmt: skip
    close_period(store.sources, BOOK, SEP)
    september = by_plan(store, SEP, "g")
    assert september == {
        ("growth#1", 1, USAGE): usage("growth", 1, "api_calls", 1200),
        ("growth", 2, USAGE): usage("growth", 2, "api_calls", 600),
        ("growth#1", 1, FIXED_FEE): prorated("29", 20, 30),
        ("growth", 2, FIXED_FEE): prorated("39", 10, 30),
    }


def test_coupons_taken_from_the_command_line_are_lines_of_their_own_before_tax(
    scenario: Feed, store_environment: Stores
) -> None:
    """a (growth from Aug 20, 12 of 31 days) takes the welcome credit (20 USD, prorated
    like its fees) and half off its calls (on api_calls only), which comes first; b is
    billed in EUR and cannot take a USD credit."""
    store = store_environment
    runner = CliRunner()

    def coupon(*args: str) -> Result:
        return runner.invoke(main, ["subscriptions", *args, "--tenant", TENANT])

    for name in ("welcome", "calls_half_off"):
        taken = coupon("add-coupon", "a", "--coupon", name, "--on", "2026-08-25")
        assert taken.exit_code == 0, taken.output
    euros = coupon("add-coupon", "b", "--coupon", "welcome", "--on", "2026-08-25")
    assert euros.exit_code == 1 and "billed in EUR" in euros.output, euros.output
    close_period(store.sources, BOOK, AUG)
    august = invoices(store, AUG)["a"]
    calls = usage("growth", 1, "api_calls", 1500)
    fee = prorated("29", 12, 31)
    half = cents(calls / 2)
    welcome = min(cents(Decimal(20) * 12 / 31), calls - half + fee)
    assert [(line.item, line.amount) for line in august.lines if line.kind == DISCOUNT] == [
        ("calls_half_off", -half), ("welcome", -welcome)
    ]  # fmt: skip
    assert august.subtotal == calls + fee - half - welcome
    assert august.tax == sum(cents(line.amount * Decimal("8.25") / 100) for line in august.lines)
    number = next(n for n, line in enumerate(august.lines, 1) if line.item == "welcome")
    explained = runner.invoke(main, ["invoices", "explain", august.invoice_id, str(number)])
    assert explained.exit_code == 0 and "prorated by the" in explained.output, explained.output
    # Ended from September: September's invoice has no welcome credit (it lasted one
    # period anyway) and no half-off calls.
    ended = coupon("remove-coupon", "a", "--coupon", "calls_half_off", "--on", "2026-09-01")
    assert ended.exit_code == 0, ended.output
    close_period(store.sources, BOOK, SEP)
    assert not [line for line in invoices(store, SEP)["a"].lines if line.kind == DISCOUNT]


def test_a_gauge_weighed_over_time_a_mean_and_a_minimum_are_billed_and_explained(
    scenario: Feed, store: Stores
) -> None:
    """a (growth from Aug 20) reports its disk (5 GB on Aug 21, 8 GB from Aug 25, held to
    the end of August), its cores (a mean) and its replicas (the fewest); b (scale) ends
    on Sep 21, so its disk is held to then, not to the end of September."""
    scenario.send(
        [("a", "disk_gb", 5_000, at(date(2026, 8, 21), 0), {}),
         ("a", "disk_gb", 8_000, at(date(2026, 8, 25), 0), {}),
         ("a", "cores", 3, at(date(2026, 8, 22)), {}), ("a", "cores", 6, at(date(2026, 8, 23)), {}),
         ("a", "replicas", 4, at(date(2026, 8, 22)), {}),
         ("a", "replicas", 2, at(date(2026, 8, 23)), {}),
         ("b", "disk_gb", 1_000, at(date(2026, 9, 1), 0), {})]
    )  # fmt: skip
    # A report stamped before one counted already is refused, loudly.
    stale = UsageEvent(id="stale", tenant=TENANT, subscription="a", meter="disk_gb",
                       quantity=1, timestamp=at(date(2026, 8, 24)))  # fmt: skip
    partition = partition_of(stale.partition_key(), PARTITIONS)
    late = scenario.processor.process(
        [Record(partition, scenario.offsets[partition], encode(stale))]
    )
    scenario.offsets[partition] += 1
    assert [r.reason for r in late.rejected] == ["out_of_order"]
    close_period(store.sources, BOOK, AUG)
    close_period(store.sources, BOOK, SEP)
    august = invoices(store, AUG)["a"]
    quantities = {line.item: line.quantity for line in august.lines if line.kind == USAGE}
    hours = 5 * 4 * 24 + 8 * 7 * 24  # GB-hours: 5 GB for 4 days, 8 GB for 7
    assert quantities["disk_gb"] == hours
    assert (quantities["cores"], quantities["replicas"]) == (5, 2)  # 4.5 rounds half up
    for item in ("disk_gb", "cores", "replicas"):
        number = next(n for n, line in enumerate(august.lines, 1) if line.item == item)
        assert explain_line(store.sources, BOOK, august, number).agrees is True, item
    september = invoices(store, SEP)["b"]
    (disk,) = [line for line in september.lines if line.item == "disk_gb"]
    assert disk.quantity == 1 * 20 * 24  # 1 GB from Sep 1 to its end on Sep 21
    number = september.lines.index(disk) + 1
    assert explain_line(store.sources, BOOK, september, number).agrees is True


def test_finalized_invoices_are_numbered_gaplessly_dated_and_keep_their_parties(
    scenario: Feed, store_environment: Stores
) -> None:
    """Finalizing gives each tenant's invoices the next numbers, in subscription order, an
    issue day, a due day from the customer's payment terms, and the seller and customer as
    they were; a draft has none of it. Changing the customer later changes no issued
    invoice."""
    store = store_environment
    store.subscriptions.write_customers(
        [Customer(TENANT, "cust-a", "Alpha Ltd", "crm-1", Decimal("8.25"), "",
                  "1 Main St\nSpringfield", "US-123", 14)],
        version=2,
    )  # fmt: skip
    seller = Party("Meter Co", "9 Billing Way", "EU-987")
    close_period(store.sources, BOOK, AUG)
    assert {i.number for i in invoices(store, AUG).values()} == {0}
    issued_at = datetime(2026, 10, 3, 9, tzinfo=UTC)
    close_period(store.sources, BOOK, AUG, finalize=True, seller=seller,
                 clock=lambda: issued_at)  # fmt: skip
    august = invoices(store, AUG)
    assert [(s, august[s].number) for s in ("a", "b", "c")] == [("a", 1), ("b", 2), ("c", 3)]
    a = august["a"]
    assert (a.issued_on, a.due_on) == (date(2026, 10, 3), date(2026, 10, 17))  # net 14
    assert august["c"].due_on == date(2026, 11, 2)  # no terms given: net 30
    assert a.seller == seller and a.bill_to == Party("Alpha Ltd", "1 Main St\nSpringfield",
                                                     "US-123")  # fmt: skip
    store.subscriptions.write_customers(
        [Customer(TENANT, "cust-a", "Alpha Group", "crm-1", Decimal("8.25"), "", "New St", "",
                  14)],
        version=3,
    )  # fmt: skip
    assert invoices(store, AUG)["a"].bill_to.address == "1 Main St\nSpringfield"
    # The next period goes on from the last number; running it again numbers nothing.
    for _ in range(2):
        close_period(store.sources, BOOK, SEP, finalize=True, seller=seller,
                     clock=lambda: issued_at.replace(month=11))  # fmt: skip
    assert sorted(i.number for i in invoices(store, SEP).values()) == [4, 5, 6]
    exported = as_dict(invoices(store, SEP)["a"])
    assert (exported["number"], exported["seller"]["tax_id"], exported["bill_to"]["name"]) == (
        "000004", "EU-987", "Alpha Group"
    )  # fmt: skip
    assert "Invoice No. 000004" in to_html([invoices(store, SEP)["a"]])


def test_a_finalized_invoice_is_credited_and_voided_by_numbered_credit_notes(
    scenario: Feed, store_environment: Stores, tmp_path: Path
) -> None:
    """From the command line: a part of a's usage line credited, then b voided; the notes
    are numbered 1 and 2, exported, and taken off the revenue report; a draft or an
    over-credit is refused."""
    store, runner = store_environment, CliRunner()
    close_period(store.sources, BOOK, AUG)
    draft = invoices(store, AUG)["a"]
    refused = runner.invoke(main, ["invoices", "credit", draft.invoice_id, "--line", "1",
                                   "--reason", "x"])  # fmt: skip
    assert refused.exit_code == 1 and "is a draft" in refused.output, refused.output
    close_period(store.sources, BOOK, AUG, finalize=True)
    august = invoices(store, AUG)
    a, b = august["a"], august["b"]
    part = runner.invoke(main, ["invoices", "credit", a.invoice_id, "--line", "1=0.10",
                                "--reason", "a promised goodwill credit"])  # fmt: skip
    assert part.exit_code == 0 and "credit note No. 000001" in part.output, part.output
    too_much = runner.invoke(main, ["invoices", "credit", a.invoice_id, "--line",
                                    f"1={a.lines[0].amount}", "--reason", "x"])  # fmt: skip
    assert too_much.exit_code == 1 and "left to credit" in too_much.output
    voided = runner.invoke(main, ["invoices", "void", b.invoice_id, "--reason", "billed in error",
                                  "--yes"])  # fmt: skip
    assert voided.exit_code == 0, voided.output
    notes = CreditLedger(store.connection).notes(TENANT)
    assert [(n.number, n.invoice_id) for n in notes] == [(1, a.invoice_id), (2, b.invoice_id)]
    first, second = notes
    assert (first.subtotal, first.tax) == (Decimal("0.10"), Decimal("0.01"))  # 8.25% of 0.10
    assert (second.subtotal, second.tax) == (b.subtotal, b.tax)  # all of it
    assert invoices(store, AUG)["b"] == b  # the invoice itself never changes
    # Exported as JSON, CSV and HTML.
    for fmt in ("json", "csv", "html"):
        target = tmp_path / f"notes.{fmt}"
        exported = runner.invoke(main, ["credit-notes", "export", "--format", fmt, "-o",
                                        str(target)])  # fmt: skip
        assert exported.exit_code == 0, exported.output
    assert json.loads((tmp_path / "notes.json").read_text())[1]["total"] == f"{b.total:.2f}"
    assert "billed in error" in (tmp_path / "notes.csv").read_text()
    assert "Credit note No. 000002" in (tmp_path / "notes.html").read_text()
    explained = runner.invoke(main, ["credit-notes", "explain", first.credit_note_id])
    assert explained.exit_code == 0, explained.output
    assert "this one credits 0.10 + tax 0.01" in explained.output, explained.output
    assert f"{a.lines[0].amount - Decimal('0.10'):.2f} is left to credit" in explained.output
    # Revenue takes the credits off, as their own status.
    revenue = store.sources.ledger.revenue_by_plan(AUG, AUG, TENANT)
    credited = sum((row[5] for row in revenue if row[3] == "credited"), Decimal(0))
    assert credited == -(first.subtotal + second.subtotal)


TESSERACT = shutil.which("tesseract")
PANGO = ctypes.util.find_library("pango-1.0") and ctypes.util.find_library("pangoft2-1.0")


@pytest.mark.skipif(not PANGO, reason="WeasyPrint needs Pango (apt-get install "
                    "libpango-1.0-0 libpangoft2-1.0-0)")  # fmt: skip
@pytest.mark.skipif(not TESSERACT, reason="reading a PDF's page needs tesseract (apt-get "
                    "install tesseract-ocr)")  # fmt: skip
def test_invoices_and_credit_notes_export_as_pdfs_whose_page_shows_the_total(
    scenario: Feed, store_environment: Stores, tmp_path: Path
) -> None:
    """A PDF per invoice; page 1 of a's, rendered to PNG and read back by OCR, shows its
    number and its total; a credit note's PDF shows what it credits."""
    import pypdfium2  # noqa: PLC0415 (test-only tools, loaded where they are used)
    import pytesseract  # noqa: PLC0415

    store, runner = store_environment, CliRunner()
    close_period(store.sources, BOOK, AUG, finalize=True, seller=Party("Meter Co", "", "EU-1"))
    folder = tmp_path / "pdf"
    exported = runner.invoke(main, ["invoices", "export", "--period", "2026-08", "--format",
                                    "pdf", "-o", str(folder)])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    august = invoices(store, AUG)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{i.invoice_id}.pdf" for i in august.values()
    )
    a = august["a"]

    def page_text(path: Path) -> str:
        page = pypdfium2.PdfDocument(path)[0].render(scale=3).to_pil()
        page.save(path.with_suffix(".png"))
        # One block of text: the default page segmentation split the header's letters apart
        # ("I nvo i ce N oO 0 0 0 0 0 1") once the lines grew a tax rule.
        return str(pytesseract.image_to_string(page, config="--psm 6"))

    text = page_text(folder / f"{a.invoice_id}.pdf")
    assert f"{a.total:.2f} USD" in text, text
    assert f"No. {a.number_label}" in text and "Meter Co" in text, text
    voided = runner.invoke(main, ["invoices", "void", a.invoice_id, "--reason", "duplicate",
                                  "--yes"])  # fmt: skip
    assert voided.exit_code == 0, voided.output
    notes = tmp_path / "notes"
    assert runner.invoke(main, ["credit-notes", "export", "--format", "pdf", "-o",
                                str(notes)]).exit_code == 0  # fmt: skip
    (note,) = notes.glob("*.pdf")
    assert f"{a.total:.2f} USD" in page_text(note)
    missing = runner.invoke(main, ["invoices", "export", "--period", "2026-08", "--format", "pdf"])
    assert missing.exit_code == 1 and "give the folder with --output" in missing.output
