"""Tax by jurisdiction through closing, over the real store: an EU business customer with
a VAT number is reverse-charged, a consumer in another country pays that country's rate,
an exempt customer pays none, each line names its rule; a change of rate takes effect on
its date, and a finalized invoice keeps the rate it had."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from invoicing.closing import close_period
from invoicing.export import to_csv
from invoicing.tax import TaxPolicy, TaxRates
from tests.integration.test_invoices import AUG, BOOK, SEP, TENANT, Feed, invoices, seed_scenario
from tests.stores import Stores

pytestmark = pytest.mark.integration


@pytest.fixture
def feed(store: Stores) -> Feed:
    fed = seed_scenario(store)
    known = store.subscriptions.customers(TENANT)
    store.subscriptions.write_customers([
        replace(known[(TENANT, "cust-a")], country="FR", tax_id="FR 40303265045"),
        replace(known[(TENANT, "cust-b")], country="IT", tax_id=""),
        replace(known[(TENANT, "cust-c")], country="FR", tax_exempt=True),
    ], version=2)  # fmt: skip
    return fed


def test_each_customer_is_taxed_by_its_jurisdictions_rule_and_keeps_a_finalized_rate(
    feed: Feed, store: Stores, tmp_path: Path
) -> None:
    german_seller = TaxPolicy(TaxRates.load(), "DE")
    close_period(store.sources, BOOK, AUG, finalize=True, taxes=german_seller)
    august = invoices(store, AUG)
    a, b, c = august["a"], august["b"], august["c"]
    assert a.tax_rate == 0 and a.tax == 0 and a.tax_rule.startswith("reverse charge")
    assert (b.tax_rate, b.tax_rule) == (Decimal(22), "IT 22% in force on 2026-08-31")
    assert all(x.tax == (x.amount * Decimal("0.22")).quantize(Decimal("0.01"), ROUND_HALF_UP)
               for x in b.lines)  # fmt: skip
    assert c.tax == 0 and c.tax_rule == "exempt: the customer is tax-exempt"
    rows = to_csv([a]).splitlines()
    assert rows[0].endswith(",tax_rule") and all("reverse charge" in row for row in rows[1:])

    # Italy's rate goes to 25% from September 1st (a file of one's own, dated).
    rates = tmp_path / "rates.yaml"
    rates.write_text("eu_members: [DE, FR, IT]\nrates:\n"
                     "  - {country: IT, rate: '22', from: 2013-10-01}\n"
                     "  - {country: IT, rate: '25', from: 2026-09-01}\n"
                     "  - {country: FR, rate: '20', from: 2014-01-01}\n")  # fmt: skip
    raised = TaxPolicy(TaxRates.load(rates), "DE")
    assert close_period(store.sources, BOOK, AUG, taxes=raised).already_final == 3
    assert invoices(store, AUG)["b"].tax_rate == 22, "a finalized invoice keeps its rate"
    close_period(store.sources, BOOK, SEP, taxes=raised)
    assert invoices(store, SEP)["b"].tax_rate == 25
