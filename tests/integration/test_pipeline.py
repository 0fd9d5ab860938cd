"""End to end on the real engines: the embedded broker, a Faust worker process and chDB.

Every invoiced amount is checked against a plain Decimal computation over the
distinct events the demo generator produced, duplicates included in what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from base.events import group_label
from base.settings import Settings
from invoicing.invoice import DISCOUNT, FIXED_FEE, TRUE_UP, USAGE
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import DemoOptions, Progress, run_demo
from meterline.embedded_broker import EmbeddedBroker
from rating.loading import load_price_book
from rating.money import round_to_minor_unit
from rating.period import Period, slices
from rating.plans import PriceBook
from tests.expected import expected_totals

pytestmark = pytest.mark.integration

LineKey = tuple[str, str, str, str, int]  # subscription, kind, item, group, plan version


def expected_lines(book: PriceBook, options: DemoOptions) -> dict[LineKey, tuple[Decimal, Decimal]]:
    """Every invoice line -> (quantity, amount rounded to the minor unit), by Decimal: the
    usage, a first tier's flat fee at zero usage, prorated fees, true-ups, then the
    plan's discounts (the demo's subscriptions all start in their first periods)."""
    subs = generator.subscriptions(
        options.subscriptions, list(book.versions), options.seed, options.period
    )
    sent = list(
        generator.events(
            subs, options.events, options.period, options.duplicate_share, options.seed
        )
    )
    plan_of = {s.subscription: s.plan for s in subs}
    lines: dict[LineKey, tuple[Decimal, Decimal]] = {}
    for (subscription, meter, _, version, group), (quantity, exact) in expected_totals(
        book, plan_of, generator.distinct(sent)
    ).items():
        minor_digits = book.plan(plan_of[subscription], version).minor_digits
        amount = round_to_minor_unit(exact, minor_digits)
        scaled = Decimal(quantity).scaleb(-book.meter(meter).scale)
        lines[(subscription, USAGE, meter, group_label(group), version)] = (scaled, amount)
    period = Period(options.period)
    for sub in subs:
        active_from = sub.active_from
        for part in slices(book, sub.plan, period, active_from):
            plan, share = part.plan, Decimal(part.days) / Decimal(period.days)
            for charge in plan.charges:  # zero_usage: first_tier bills without usage too
                key = (sub.subscription, USAGE, charge.meter, "", plan.version)
                if getattr(charge, "zero_usage", "") == "first_tier" and not any(
                    k[:3] == key[:3] and k[4] == key[4] for k in lines
                ):
                    first = charge.tiers[0].flat_fee  # type: ignore[attr-defined]
                    lines[key] = (Decimal(0), round_to_minor_unit(first, plan.minor_digits))
            billed = [amount for (s, _, _, _, v), (_, amount) in lines.items()
                      if s == sub.subscription and v == plan.version]  # fmt: skip
            for fee in plan.fixed_fees:
                label = fee.name + ("" if part.days == period.days else
                                    f" ({part.days}/{period.days} days)")  # fmt: skip
                amount = round_to_minor_unit(fee.amount * share, plan.minor_digits)
                lines[(sub.subscription, FIXED_FEE, label, "", plan.version)] = (Decimal(0), amount)
                billed.append(amount)
            if plan.commitment is not None:
                committed = round_to_minor_unit(plan.commitment * share, plan.minor_digits)
                if committed > sum(billed):
                    share_text = f" ({part.days}/{period.days} days)"
                    label = "minimum commitment" + ("" if part.days == period.days else share_text)
                    key = (sub.subscription, TRUE_UP, label, "", plan.version)
                    lines[key] = (Decimal(0), committed - sum(billed))
                    billed.append(committed - sum(billed))
            for coupon_id in plan.discounts:  # the demo's are percentages of the whole slice
                coupon = book.coupon(coupon_id)
                assert coupon.percent_off is not None and coupon.meter is None
                off = round_to_minor_unit(sum(billed) * coupon.percent_off / 100, 2)
                label = f"{coupon.name} ({coupon.percent_off}% off)"
                lines[(sub.subscription, DISCOUNT, label, "", plan.version)] = (Decimal(0), -off)
    return lines


def test_every_invoiced_amount_equals_the_decimal_computation_of_the_distinct_events(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers)
    book = load_price_book(PRICE_BOOK)
    options = DemoOptions(
        subscriptions=150,
        events=12_000,
        duplicate_share=0.1,
        period=date(2026, 9, 1),
        seed=11,
        bad_share=0.01,
    )

    outcome = run_demo(settings, book, options, Progress())

    expected = expected_lines(book, options)
    invoiced = {
        (invoice.subscription, line.kind,
         line.item if line.kind == USAGE else line.description, group_label(line.group),
         line.plan_version): (line.quantity, line.amount)
        for invoice in outcome.invoices
        for line in invoice.lines
    }  # fmt: skip
    assert invoiced == expected
    subs = generator.subscriptions(
        options.subscriptions, list(book.versions), options.seed, options.period
    )
    rates = {customer.customer: customer.tax_rate for customer in generator.customers(subs)}
    for invoice in outcome.invoices:
        assert invoice.status == "draft" and invoice.tax_rate == rates[invoice.customer]
        for line in invoice.lines:
            assert line.tax == round_to_minor_unit(line.amount * invoice.tax_rate / 100, 2)
    assert outcome.closed.created == len(outcome.invoices) == options.subscriptions
    kinds = {(kind, version) for _, kind, _, _, version in invoiced}
    assert {group for _, _, _, group, _ in invoiced} == {"", "model=small", "model=large"}
    assert kinds >= {(USAGE, 1), (USAGE, 2), (FIXED_FEE, 1), (FIXED_FEE, 2), (TRUE_UP, 1),
                     (DISCOUNT, 1)}  # fmt: skip
    assert outcome.sent == options.events + 120  # and 1% more that no one can bill
    assert outcome.stored_events == outcome.distinct < outcome.sent
    assert outcome.rejected == 120
    assert outcome.rejected_by_reason == {
        "negative_quantity": 40, "unknown_subscription": 40, "unpriced_meter": 40,
    }  # fmt: skip
    print(
        f"\nsent {outcome.sent}, distinct {outcome.distinct}, duplicates dropped "
        f"{outcome.sent - outcome.stored_events}, invoice lines {len(invoiced)}"
    )
