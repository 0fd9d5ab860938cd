"""End to end on the real engines: the embedded broker, a Faust worker process and chDB.

Every invoiced amount is checked against a plain Decimal computation over the
distinct events the demo generator produced, duplicates included in what was sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import DemoOptions, Progress, run_demo
from meterline.embedded_broker import EmbeddedBroker
from meterline.settings import Settings
from rating import oracle
from rating.money import round_to_minor_unit
from rating.plans import PriceBook, load_price_book

pytestmark = pytest.mark.integration


def expected_lines(
    book: PriceBook, options: DemoOptions
) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(subscription, meter) -> (quantity, amount rounded to the minor unit), by Decimal."""
    subs = generator.subscriptions(options.subscriptions, [p.id for p in book.plans], options.seed)
    plan_of = {s.subscription: book.plan(s.plan) for s in subs}
    sent = list(
        generator.events(
            subs, options.events, options.period, options.duplicate_share, options.seed
        )
    )
    quantity: dict[tuple[str, str], int] = defaultdict(int)
    for event in generator.distinct(sent):
        quantity[(event.subscription, event.meter)] += event.quantity
    lines = {}
    for (subscription, meter), total in quantity.items():
        plan = plan_of[subscription]
        charge = plan.charge_for(meter)
        assert charge is not None
        exact = oracle.rate_charge(charge, total, book.meter(meter).scale).amount
        lines[(subscription, meter)] = (total, round_to_minor_unit(exact, plan.minor_digits))
    return lines


def test_every_invoiced_amount_equals_the_decimal_computation_of_the_distinct_events(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    book = load_price_book(PRICE_BOOK)
    options = DemoOptions(
        subscriptions=150, events=12_000, duplicate_share=0.1, period=date(2026, 9, 1), seed=11
    )

    outcome = run_demo(settings, book, options, Progress())

    expected = expected_lines(book, options)
    lines = outcome.summary.lines
    invoiced = {(line.subscription, line.meter): (line.quantity, line.amount) for line in lines}
    assert invoiced == expected
    assert outcome.sent == options.events
    assert outcome.stored_events == outcome.distinct < outcome.sent
    assert outcome.rejected == 0
    print(
        f"\nsent {outcome.sent}, distinct {outcome.distinct}, duplicates dropped "
        f"{outcome.sent - outcome.stored_events}, invoice lines {len(invoiced)}"
    )
