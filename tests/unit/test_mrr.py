"""MRR and its movements, from subscriptions and the price book, checked by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from invoicing.mrr import MrrMonth, mrr_by_month
from meterline.demo import PRICE_BOOK
from rating.loading import load_price_book
from rating.period import midnight
from subscriptions.model import Subscription

BOOK = load_price_book(PRICE_BOOK)  # growth: 29 a month, 39 from 2026-09-16; scale: 40 (EUR)

SEP_10 = midnight(date(2026, 9, 10))


def sub(name: str, plan: str, since: date, until: date | None = None,
        changes: tuple[tuple[date, str], ...] = ()) -> Subscription:  # fmt: skip
    return Subscription(
        "acme", name, "c", plan, midnight(since), until and midnight(until), changes
    )


def test_new_expansion_contraction_and_churn_are_told_apart() -> None:
    subs = [
        sub("a", "growth", date(2026, 7, 1)),  # the September price revision: expansion
        sub("b", "growth", date(2026, 8, 10), date(2026, 9, 5)),  # new in Aug, churned in Sep
        sub("c", "scale", date(2026, 9, 20)),  # new in Sep, in EUR
        sub(
            "d", "growth", date(2026, 7, 1), changes=((midnight(date(2026, 9, 2)), "starter"),)
        ),  # down
    ]
    august, september_eur, september_usd = mrr_by_month(subs, BOOK, date(2026, 9, 1), months=2)
    assert august == MrrMonth(date(2026, 8, 1), "USD", Decimal(87), 3, Decimal(29),
                              Decimal(0), Decimal(0), Decimal(0))  # fmt: skip
    assert september_usd == MrrMonth(
        date(2026, 9, 1), "USD", mrr=Decimal(39), active=2, new=Decimal(0),
        expansion=Decimal(10), contraction=Decimal(-29), churned=Decimal(-29),
    )  # fmt: skip
    assert september_eur.mrr == september_eur.new == Decimal(40) and september_eur.active == 1
    assert september_usd.arr == Decimal(468)


def test_an_add_on_and_a_price_revision_are_expansion_and_a_discount_contraction() -> None:
    subs = [
        sub("a", "growth#1", date(2026, 7, 1), changes=((SEP_10, "growth#1@+10%"),)),
        sub("b", "growth#1", date(2026, 7, 1), changes=((SEP_10, "growth#1+premium_support"),)),
        sub("c", "growth#1", date(2026, 7, 1), changes=((SEP_10, "growth#1@-20%"),)),
    ]  # fmt: skip
    (september,) = mrr_by_month(subs, BOOK, date(2026, 9, 1), months=1)
    assert september.mrr == Decimal("31.9") + Decimal(29 + 49) + Decimal("23.2")
    assert september.expansion == Decimal("2.9") + Decimal(49)
    assert september.contraction == Decimal("-5.8")
