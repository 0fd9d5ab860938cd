"""``meterline credits``: prepaid credits, granted free or paid, applied to invoices before
tax in their declared order (invoicing/credits.py); balances and history."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import click

from meterline.cli_support import (
    console,
    fail,
    format_option,
    load_book,
    load_settings,
    opened_store,
    print_rows,
)


@click.group("credits")
def credits_group() -> None:
    """Prepaid credits: grant them, see their balances and where they were used."""


@credits_group.command("grant")
@click.option("--tenant", required=True)
@click.option("--customer", required=True)
@click.option(
    "--subscription",
    default="",
    help="Only this subscription's invoices.  [default: any of the customer's]",
)
@click.option(
    "--amount",
    required=True,
    help="The credit, in --currency (whole minor units), or in units of --meter.",
)
@click.option(
    "--currency",
    default="",
    help="ISO 4217: it applies to invoices in it (a grant in units: any, unless given).",
)
@click.option(
    "--meter",
    default="",
    help="A grant in this meter's units: its usage is billed as if that many fewer were used.",
)
@click.option(
    "--priority",
    type=click.IntRange(0, 1_000_000),
    default=0,
    show_default=True,
    help="Lower is used first; then the soonest to expire, then the oldest.",
)
@click.option(
    "--from",
    "effective",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="The day it takes effect.  [default: today]",
)
@click.option(
    "--expires",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="The day it expires (exclusive): usable on periods that start before.",
)
@click.option(
    "--paid",
    "price",
    default=None,
    help="A paid top-up: its price, billed once on the invoice of the period it takes effect in.",
)
@click.option("--reason", required=True, help="Why: printed on each invoice line it makes.")
def grant(tenant: str, customer: str, subscription: str, amount: str, currency: str,
          meter: str, priority: int, effective: datetime | None, expires: datetime | None,
          price: str | None, reason: str) -> None:  # fmt: skip
    """Grant prepaid credit to a customer (or one subscription of it), in a currency or
    in units of a meter."""
    from invoicing.credits import FREE, PAID, Grant, GrantError, checked_grant
    from invoicing.grant_api import meter_scale
    from invoicing.grant_ledger import GrantLedger, new_grant_id
    from subscriptions.store import SubscriptionStore

    try:
        value, cost = Decimal(amount), Decimal(price) if price is not None else Decimal(0)
    except InvalidOperation:
        fail("--amount and --paid are decimal numbers")
    start = (effective or datetime.now(UTC)).date()
    settings = load_settings()
    book = load_book(settings)
    with opened_store(settings) as connection:
        if (tenant, customer) not in SubscriptionStore(connection).customers(tenant):
            fail(f"no customer {customer!r} for tenant {tenant!r}")
        try:
            made = checked_grant(Grant(tenant, new_grant_id(), customer, subscription, currency,
                                       value, priority, start,
                                       expires.date() if expires else None,
                                       PAID if price else FREE, cost, reason.strip(),
                                       meter=meter), meter_scale(book, meter))  # fmt: skip
        except GrantError as error:
            fail(str(error))
        GrantLedger(connection).write([made])
    console.print(
        f"granted {made.grant_id}: {value} {meter or currency} to {customer}"
        + (f" for {cost} {currency}" if price else " (free)"),
        highlight=False,
    )


@credits_group.command("list")
@click.option("--tenant", required=True)
@click.option("--customer", default=None, help="Only this customer's.")
@format_option
def list_grants(tenant: str, customer: str | None, fmt: str) -> None:
    """Every grant with what invoices used of it (finalized, and drafts) and its balance."""
    from invoicing.grant_ledger import GrantLedger

    with opened_store(load_settings()) as connection:
        kept = GrantLedger(connection)
        grants, used = kept.grants(tenant), kept.applications(tenant)
    rows = []
    for g in grants:
        if customer is not None and g.customer != customer:
            continue
        taken = sum((a.taken for a in used.get(g.grant_id, [])), Decimal(0))
        today = datetime.now(UTC).date()
        expired = g.expires_on is not None and g.expires_on <= today
        state = "voided" if g.voided else "expired" if expired else ""
        rows.append((g.grant_id, g.customer, g.subscription or "(any)", g.meter or g.currency,
                     g.amount,
                     taken, g.amount - taken, g.priority, str(g.effective_from),
                     str(g.expires_on or ""), g.kind, state, g.reason))  # fmt: skip
    print_rows("Prepaid credits", ("grant", "customer", "subscription", "in", "amount",
                                   "used", "balance", "priority", "from", "expires", "kind",
                                   "state", "reason"), rows, fmt)  # fmt: skip


@credits_group.command("history")
@click.argument("grant_id")
@click.option("--tenant", required=True)
@format_option
def history(grant_id: str, tenant: str, fmt: str) -> None:
    """Where a grant was used: each invoice's credit line."""
    from invoicing.grant_ledger import GrantLedger

    with opened_store(load_settings()) as connection:
        used = GrantLedger(connection).applications(tenant).get(grant_id, [])
    print_rows(f"Uses of {grant_id}", ("invoice", "period", "subscription", "status", "amount"),
               [(a.invoice_id, f"{a.period:%Y-%m}", a.subscription, a.status, a.amount)
                for a in used], fmt)  # fmt: skip


@credits_group.command("void")
@click.argument("grant_id")
@click.option("--tenant", required=True)
def void(grant_id: str, tenant: str) -> None:
    """Void a grant: no invoice closed from now on uses what is left of it. Invoices
    finalized keep the credit they applied; a draft loses it when its period is closed
    again."""
    from dataclasses import replace

    from invoicing.grant_ledger import GrantLedger

    with opened_store(load_settings()) as connection:
        kept = GrantLedger(connection)
        found = next((g for g in kept.grants(tenant) if g.grant_id == grant_id), None)
        if found is None:
            fail(f"no grant {grant_id} of tenant {tenant!r}")
        if found.voided:
            fail(f"{grant_id} is void already")
        kept.write([replace(found, voided=True)])
    console.print(f"{grant_id} voided")
