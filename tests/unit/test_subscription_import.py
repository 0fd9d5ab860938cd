"""Subscriptions from CSV or JSON: good files import whole, a bad row rejects the file and
is named with its problem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from invoicing.subscription_import import SubscriptionFileError, read_subscriptions
from meterline.demo import PRICE_BOOK
from rating.plans import load_price_book

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
