"""Subscriptions from CSV or JSON: good files import whole, a bad row rejects the file and
is named with its problem."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book
from subscriptions.imports import (
    SubscriptionFileError,
    read_customers,
    read_subscriptions,
)

BOOK = load_price_book(PRICE_BOOK)


def test_csv_and_json_give_the_same_rows(tmp_path: Path) -> None:
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text(
        "tenant,subscription,customer,plan,started_at\n"
        "acme,sub-1,cust-1,starter,2026-10-01\n"
        "acme,sub-2,cust-2,growth,2026-10-15T08:30:00+02:00\n"
    )
    json_file = tmp_path / "subs.json"
    json_file.write_text(
        '[{"tenant": "acme", "subscription": "sub-1", "customer": "cust-1", "plan": "starter",'
        ' "started_at": "2026-10-01T00:00:00Z"},'
        ' {"tenant": "acme", "subscription": "sub-2", "customer": "cust-2", "plan": "growth",'
        ' "started_at": "2026-10-15T06:30:00Z"}]'
    )
    rows = read_subscriptions(csv_file, BOOK)
    assert rows == read_subscriptions(json_file, BOOK)
    assert rows[1].started_at == datetime(2026, 10, 15, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("tenant,subscription,plan\nacme,s,starter\n", "missing customer, started_at"),
        ("tenant,subscription,customer,plan,started_at\nacme,s,c,platinum,2026-10-01\n",
         "row 2: plan 'platinum' is not in the price book"),
        ("tenant,subscription,customer,plan,started_at\nacme,s,c,starter,yesterday\n",
         "row 2: started_at 'yesterday' is not a day or time"),
        ("tenant,subscription,customer,plan,started_at\n,s,c,starter,2026-10-01\n",
         "row 2: tenant is empty"),
        ("tenant,subscription,customer,plan,started_at\n"
         "acme,s,c,starter,2026-10-01\nacme,s,c,growth,2026-10-01\n",
         "row 3: acme/s appears twice"),
        ('[{"tenant": "acme"}]', "row 1: Object missing required field"),
        ("[not json", "is not valid JSON"),
        ("tenant,subscription,customer,plan,started_at\n", "no subscriptions"),
        ("tenant,subscription,customer,plan,started_at,ended_at\n"
         "acme,s,c,starter,2026-10-01,2026-09-30\n",
         "row 2: ended_at 2026-09-30 is not after started_at 2026-10-01"),
        ("tenant,subscription,customer,plan,started_at,anchor_day\n"
         "acme,s,c,starter,2026-10-01,29\n",
         "row 2: anchor_day 29 is not a day from 1 to 28"),
        ("tenant,subscription,customer,plan,started_at,anchor_day\n"
         "acme,s,c,starter,2026-10-01,mid\n",
         "row 2: Expected `int`"),
    ],
)  # fmt: skip
def test_a_bad_file_imports_nothing_and_names_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "subs.csv"
    path.write_text(content)
    with pytest.raises(SubscriptionFileError) as raised:
        read_subscriptions(path, BOOK)
    assert problem in str(raised.value)


def test_an_end_and_an_anchor_day_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "subs.csv"
    path.write_text(
        "tenant,subscription,customer,plan,started_at,ended_at,anchor_day\n"
        "acme,s1,c,starter,2026-10-01,2026-10-15,\nacme,s2,c,starter,2026-10-15,,15\n"
    )
    first, second = read_subscriptions(path, BOOK)
    assert first.ended_at == datetime(2026, 10, 15, tzinfo=UTC) and second.ended_at is None
    assert (first.anchor_day, second.anchor_day) == (1, 15)


def test_customers_import_with_their_tax_rate_and_crm_id(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        "tenant,customer,name,tax_rate,external_id\n"
        'acme,c1,Alpha Ltd,8.25,crm-1\nacme,c2,"Beta, GmbH",0,\n'
    )
    alpha, beta = read_customers(path)
    assert (alpha.name, alpha.tax_rate, alpha.external_id) == (
        "Alpha Ltd",
        Decimal("8.25"),
        "crm-1",
    )
    assert (beta.name, beta.tax_rate, beta.external_id) == ("Beta, GmbH", Decimal(0), "")


@pytest.mark.parametrize(
    ("rate", "problem"),
    [("abc", "is not a percentage"), ("-1", "is not a percentage"), ("101", "is not a percentage"),
     ("NaN", "is not a percentage"), ("8.12345", "has more than 4 decimal places")],
)  # fmt: skip
def test_a_customer_with_an_impossible_tax_rate_is_refused(
    tmp_path: Path, rate: str, problem: str
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(f"tenant,customer,name,tax_rate\nacme,c1,Alpha,{rate}\n")
    with pytest.raises(SubscriptionFileError, match=f"row 2: tax_rate '{rate}' {problem}"):
        read_customers(path)


def test_a_customer_in_a_currency_meterline_does_not_bill_in_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("tenant,customer,name,tax_rate,currency\nacme,c1,Alpha,0,XYZ\n")
    with pytest.raises(SubscriptionFileError, match="row 2: currency 'XYZ' is not an ISO 4217"):
        read_customers(path)
