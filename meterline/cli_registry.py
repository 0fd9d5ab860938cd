"""``meterline subscriptions`` and ``meterline customers``: the registry billing reads.
With the embedded engine, run them while no worker holds the store; with a ClickHouse
server, running workers see a change within ``subscription refresh`` (30 s)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from meterline.cli_support import (
    console,
    errors,
    fail,
    import_rows,
    load_book,
    load_settings,
    opened_store,
)


class Moment(click.ParamType):
    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a day (2026-10-15) or a time with an offset", param, ctx)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


@click.group()
def subscriptions() -> None:
    """The subscriptions meterline bills: which tenant, customer and plan, from when until
    when, and the history of every change."""


@subscriptions.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_subscriptions(path: Path) -> None:
    """Import subscriptions from a CSV (header: tenant, subscription, customer, plan,
    started_at, and optionally ended_at and anchor_day) or a JSON array of such objects. A
    day means midnight UTC; ended_at is exclusive; anchor_day (1 to 28, default 1) is the
    day of the month billing periods start on. A row for a known subscription replaces it
    (its anchor day stays). One bad row rejects the whole file, naming each problem.
    """
    from subscriptions.imports import read_subscriptions
    from subscriptions.lifecycle import LifecycleError
    from subscriptions.registry import import_subscriptions

    settings = load_settings()
    book = load_book(settings)

    def write(store: Any, rows: Sequence[Any], now: datetime) -> None:
        try:
            written = import_subscriptions(store, rows, book, now, path.name)
        except LifecycleError as error:
            fail(str(error))
        publish(settings, written)

    import_rows(settings, "subscriptions", lambda: read_subscriptions(path, book), write)


_TENANT = click.option("--tenant", required=True, help="The subscription's tenant.")


class Day(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a day like 2026-12-01", param, ctx)


_ON = click.option(
    "--on",
    "day",
    type=Day(),
    default=None,
    help="First day (UTC) it applies to.  [default: the earliest: tomorrow]",
)
_AT_PERIOD_END = click.option(
    "--at-period-end", is_flag=True, help="From the first day of the next period."
)


@subscriptions.command("change")
@click.argument("subscription")
@_TENANT
@click.option("--plan", required=True, help="The plan to move to.")
@_ON
@_AT_PERIOD_END
@click.option(
    "--now",
    "immediately",
    is_flag=True,
    help="From the next whole second: an upgrade that lifts a hard limit at once.",
)
def change(
    subscription: str, tenant: str, plan: str, day: date | None, at_period_end: bool,
    immediately: bool,
) -> None:  # fmt: skip
    """Move a subscription to another plan (an upgrade or a downgrade) from the start of a
    day, or now. Usage from then on is priced under the new plan, fixed fees and the
    commitment are prorated to each plan (by day; by the second for a change made now).
    Usage already priced is never moved, so a dated change is at least tomorrow (UTC); a
    change inside a finalized period is refused."""
    from subscriptions import registry

    book = load_book(load_settings())
    _change(tenant, subscription, lambda now, notice: registry.plan_change(
        plan, registry.FromDay(day, at_period_end, now, notice, immediately), book))  # fmt: skip


@subscriptions.command("revise")
@click.argument("subscription")
@_TENANT
@click.option(
    "--percent",
    required=True,
    help="By how much every price changes: 5 for +5%, -2.5 for a 2.5% discount.",
)
@_ON
@_AT_PERIOD_END
def revise(
    subscription: str, tenant: str, percent: str, day: date | None, at_period_end: bool
) -> None:  # fmt: skip
    """Revise every price of a subscription's plan by a percentage from the start of a day
    (a contract's yearly uplift, a negotiated discount). Each price becomes price x (1 +
    percent/100), rounded half up to the nano-unit, as the plan "<plan>@+<percent>%"; it
    follows the list plan's versions, and a second revision compounds on the first. Dated
    like a plan change: tomorrow at the earliest, never inside a finalized period."""
    from subscriptions import registry

    try:
        by = Decimal(percent)
    except InvalidOperation:
        fail(f"--percent {percent!r} is not a number")
    book = load_book(load_settings())
    _change(tenant, subscription, lambda now, notice: registry.price_revision(
        by, registry.FromDay(day, at_period_end, now, notice), book))  # fmt: skip


_ADD_ON = click.option(
    "--add-on", "add_on", required=True, help="The add-on, by its id in the price book."
)


@subscriptions.command("add-charge")
@click.argument("subscription")
@_TENANT
@_ADD_ON
@_ON
@_AT_PERIOD_END
def add_charge(
    subscription: str, tenant: str, add_on: str, day: date | None, at_period_end: bool
) -> None:  # fmt: skip
    """Add an add-on of the price book (its charges and fixed fees: premium support, a
    charge on a meter the plan does not price) to a subscription from the start of a day.
    It goes with every later plan version, and its fees are prorated by day. Dated like a
    plan change: tomorrow at the earliest, never inside a finalized period."""
    _add_on_change(subscription, tenant, add_on, True, day, at_period_end)


@subscriptions.command("remove-charge")
@click.argument("subscription")
@_TENANT
@_ADD_ON
@_ON
@_AT_PERIOD_END
def remove_charge(
    subscription: str, tenant: str, add_on: str, day: date | None, at_period_end: bool
) -> None:  # fmt: skip
    """Remove an add-on from a subscription from the start of a day (tomorrow at the
    earliest). Its usage and fees up to then stay billed."""
    _add_on_change(subscription, tenant, add_on, False, day, at_period_end)


def _add_on_change(
    subscription: str, tenant: str, add_on: str, adding: bool, day: date | None,
    at_period_end: bool,
) -> None:  # fmt: skip
    from subscriptions import registry

    book = load_book(load_settings())
    _change(tenant, subscription, lambda now, notice: registry.add_on_change(
        add_on, adding, registry.FromDay(day, at_period_end, now, notice), book))  # fmt: skip


_COUPON = click.option("--coupon", required=True, help="The coupon, by its id in the price book.")
_COUPON_DAY = click.option(
    "--on", "day", type=Day(), default=None,
    help="The day (UTC) it applies from: the period it falls in, in full.  [default: today]",
)  # fmt: skip


@subscriptions.command("add-coupon")
@click.argument("subscription")
@_TENANT
@_COUPON
@_COUPON_DAY
def add_coupon(subscription: str, tenant: str, coupon: str, day: date | None) -> None:
    """Give a subscription a coupon of the price book (a percentage or an amount off, on
    one meter or the whole invoice, for some periods or until a day). It discounts the
    period the day falls in, in full, and the ones after for as long as it lasts; its
    discount is a line of its own on each invoice, before tax. Never inside a finalized
    period."""
    _coupon_change(subscription, tenant, coupon, True, day)


@subscriptions.command("remove-coupon")
@click.argument("subscription")
@_TENANT
@_COUPON
@_COUPON_DAY
def remove_coupon(subscription: str, tenant: str, coupon: str, day: date | None) -> None:
    """End a subscription's coupon: periods that start on or after the day are no longer
    discounted (a coupon that would discount no period is taken off entirely)."""
    _coupon_change(subscription, tenant, coupon, False, day)


def _coupon_change(
    subscription: str, tenant: str, coupon: str, adding: bool, day: date | None
) -> None:
    from subscriptions import registry

    book = load_book(load_settings())
    _change(tenant, subscription, lambda now, _: registry.coupon_change(
        coupon, adding, day, book, now=now))  # fmt: skip


@subscriptions.command("grant-feature")
@click.argument("subscription")
@_TENANT
@click.option("--feature", required=True, help="The feature's name (its plan's, or its own).")
@click.option(
    "--meter",
    default=None,
    help="A metered feature: this meter's quantity per period, up to --limit.",
)
@click.option("--limit", default=None, help="In the meter's units; adds to the plan's limit.")
@click.option("--hard", is_flag=True, help="Deny past the limit (instead of billing overage).")
@click.option("--config", "config", default=None, help="A configuration: a JSON object.")
@click.option("--off", is_flag=True, help="A boolean feature turned off.")
@click.option("--on", "day", type=Day(), default=None, help="From this day.  [default: today]")
@click.option("--until", type=Day(), default=None, help="Until this day (exclusive).")
def grant_feature(subscription: str, tenant: str, feature: str, meter: str | None,
                  limit: str | None, hard: bool, config: str | None, off: bool,
                  day: date | None, until: date | None) -> None:  # fmt: skip
    """Give one subscription a feature beyond its plan's, or more of a metered one (a
    one-off pack of calls): answered by GET /v1/entitlements at once, billed nothing."""
    import json

    from pydantic import ValidationError

    from rating.plans import Entitlement
    from subscriptions import registry

    kind = "metered" if meter else "config" if config else "boolean"
    try:
        entitlement = Entitlement.model_validate({
            "feature": feature, "kind": kind, "enabled": not off, "meter": meter,
            "limit": limit, "enforcement": "hard" if hard else "soft",
            "config": json.loads(config) if config else None,
        })  # fmt: skip
    except (ValidationError, json.JSONDecodeError) as error:
        fail(f"not a feature: {error}")
    book = load_book(load_settings())
    _change(tenant, subscription, lambda now, _: registry.feature_grant(
        entitlement, day, until, book, now=now))  # fmt: skip


@subscriptions.command("revoke-feature")
@click.argument("subscription")
@_TENANT
@click.option("--feature", required=True)
@click.option("--on", "day", type=Day(), default=None, help="From this day.  [default: today]")
def revoke_feature(subscription: str, tenant: str, feature: str, day: date | None) -> None:
    """End what was given to one subscription of a feature."""
    from subscriptions import registry

    _change(tenant, subscription, lambda now, _: registry.feature_revocation(
        feature, day, now=now))  # fmt: skip


@subscriptions.command("cancel")
@click.argument("subscription")
@_TENANT
@click.option("--at", "at", type=Moment(), default=None, help="When it ends.  [default: now]")
@click.option("--at-period-end", is_flag=True, help="End it when the current period ends.")
def cancel(subscription: str, tenant: str, at: datetime | None, at_period_end: bool) -> None:
    """End a subscription: now, at a time (--at), or at the end of the period. Usage
    stamped from then on is refused (subscription_ended); fixed fees and the commitment
    are prorated to the day. An end inside a finalized period is refused."""
    from subscriptions import registry

    _change(tenant, subscription,
            lambda now, _: registry.cancellation(at, at_period_end, now=now))  # fmt: skip


@subscriptions.command("renew")
@click.argument("subscription")
@_TENANT
def renew(subscription: str, tenant: str) -> None:
    """Remove a subscription's end, so it is billed on (unless that end falls in a
    finalized period)."""
    from subscriptions import registry

    _change(tenant, subscription, lambda _, __: registry.renewal())


def _change(
    tenant: str, subscription: str, operation: Callable[[datetime, timedelta], Any]
) -> None:
    """Make the change ``operation(now, notice)`` describes, or say why it cannot be
    made (``notice``: how far ahead a dated change must be)."""
    from subscriptions import registry
    from subscriptions.lifecycle import LifecycleError
    from subscriptions.store import SubscriptionStore

    settings = load_settings()
    try:
        with opened_store(settings) as connection:
            # Now once the store is open: an immediate change is made for a second from now.
            now = datetime.now(UTC)
            planned = operation(now, registry.change_notice(settings.max_clock_skew_seconds))
            store = SubscriptionStore(connection)
            changed = registry.perform(store, tenant, subscription, planned, now)
    except (LifecycleError, registry.UnknownSubscriptionError) as error:
        fail(str(error))
    publish(settings, [changed])
    console.print(f"{tenant}/{subscription} {planned.kind}: {registry.describe(changed)}",
                  highlight=False, soft_wrap=True)  # fmt: skip


def publish(settings: Any, rows: Sequence[Any]) -> None:
    """Tell running workers at once, on the subscriptions topic. Without Kafka there are
    none (the embedded broker lives inside `meterline serve`); if Kafka cannot be reached,
    workers still read the change from the store within half a minute."""
    import asyncio

    from subscriptions.feed import announce

    if settings.kafka_bootstrap_servers is None:
        return
    warning = asyncio.run(
        announce(settings.kafka_bootstrap_servers, settings.subscriptions_topic, rows)
    )
    if warning:  # the store has it: a warning, not a failure
        errors.print(f"[yellow]warning:[/] {warning}", highlight=False)


@subscriptions.command("show")
@click.argument("subscription")
@_TENANT
def show(subscription: str, tenant: str) -> None:
    """A subscription as billing sees it, and the history of its changes."""
    from rich.table import Table

    from subscriptions.registry import describe
    from subscriptions.store import SubscriptionStore

    with opened_store(load_settings()) as connection:
        store = SubscriptionStore(connection)
        row = store.subscription(tenant, subscription)
        if row is None:
            fail(f"no subscription {subscription!r} for tenant {tenant!r}")
        history = store.history(tenant, subscription)
        final = store.finalized_through(tenant, subscription)
    finalized = f"invoices finalized up to {final:%Y-%m}" if final else "no invoice finalized"
    anchored = f"; periods start on day {row.anchor_day}" if row.anchor_day != 1 else ""
    console.print(
        f"[bold]{tenant}/{subscription}[/]: customer {row.customer}, plan {row.plan} from "
        f"{row.started_at.isoformat()}; {describe(row)}{anchored}; {finalized}",
        highlight=False,
    )
    table = Table(title="History")
    for column in ("Recorded", "Change", "Effective", "Plan", "Detail"):
        table.add_column(column)
    for change in history:
        effective = change.effective_at.isoformat() if change.effective_at else ""
        table.add_row(change.recorded_at.isoformat(timespec="seconds"), change.kind, effective,
                      change.plan, change.detail)  # fmt: skip
    console.print(table)


@subscriptions.command("list")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
def list_subscriptions(tenant: str | None, limit: int) -> None:
    """List subscriptions: the plan they are on today, customer, start and end."""
    from rich.table import Table

    from subscriptions.store import SubscriptionStore

    with opened_store(load_settings()) as connection:
        found = SubscriptionStore(connection).subscriptions(tenant)
    table = Table(title=f"Subscriptions ({len(found):,}; showing up to {limit:,})")
    for column in ("Tenant", "Subscription", "Customer", "Plan", "From", "Until"):
        table.add_column(column)
    now = datetime.now(UTC)
    for sub in found[:limit]:
        until = sub.active_until.isoformat() if sub.active_until else ""
        plan = sub.plan_at(now)
        if any(moment > now for moment, _ in sub.changes):
            plan += " (a change is scheduled)"
        table.add_row(sub.tenant, sub.subscription, sub.customer, plan,
                      sub.active_from.isoformat(), until)  # fmt: skip
    console.print(table)


@click.group()
def customers() -> None:
    """Customers: who pays, their CRM reference and their tax rate."""


_CRM_FORMATS = ("meterline", "salesforce", "hubspot")


@customers.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "shape", type=click.Choice(_CRM_FORMATS), default="meterline",
              show_default=True,
              help="meterline's own CSV or JSON, or a Salesforce Account or HubSpot company "
              "export (docs/crm.md names the columns).")  # fmt: skip
@click.option("--tenant", default=None, help="The tenant of a CRM export's rows.")
def import_customers(path: Path, shape: str, tenant: str | None) -> None:
    """Import customers from a CSV (header: tenant, customer, name, tax_rate, and optionally
    external_id and currency) or a JSON array of such objects; or from a CRM's export
    (--format salesforce|hubspot, with --tenant), where the CRM's id becomes external_id.
    tax_rate is a percentage (8.25); currency, the one the customer is billed in, limits
    its subscriptions to plans priced in it. A row for a known customer replaces it; one
    bad row rejects the file."""
    from subscriptions.imports import customers_from, read_customers
    from subscriptions.registry import import_customers as write

    if shape == "meterline":
        import_rows(load_settings(), "customers", lambda: read_customers(path), write)
        return
    from subscriptions.crm import SHAPES, CrmFileError
    from subscriptions.crm import import_rows as crm_rows

    if not tenant:
        fail(f"a {shape} file does not say whose customers they are: give --tenant")
    assert tenant is not None
    try:
        rows = crm_rows(path.read_text(encoding="utf-8-sig"), SHAPES[shape], tenant)
    except (CrmFileError, UnicodeDecodeError) as error:
        fail(str(error))
    import_rows(load_settings(), "customers", lambda: customers_from(str(path), rows), write)


@customers.command("export")
@click.option("--tenant", required=True, help="Whose customers.")
@click.option("--format", "shape", type=click.Choice(_CRM_FORMATS[1:]), required=True,
              help="A Salesforce Account or HubSpot company import file.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file.  [default: stdout]")  # fmt: skip
def export_customers(tenant: str, shape: str, output: Path | None) -> None:
    """Export the tenant's customers in a CRM's bulk import shape, so the same company is
    one record in the CRM and in billing: the CRM's id (external_id) and meterline's
    customer id side by side; import the CRM's export back with customers import."""
    from subscriptions.crm import SHAPES, export_csv
    from subscriptions.store import SubscriptionStore

    with opened_store(load_settings()) as connection:
        found = SubscriptionStore(connection).customers(tenant)
    text = export_csv(sorted(found.values(), key=lambda c: c.customer), SHAPES[shape])
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    errors.print(f"wrote {len(found):,} customers to {output}")


@customers.command("portal-link")
@click.argument("customer")
@click.option("--tenant", required=True, help="The customer's tenant.")
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True,
              help="How long the link is valid.")  # fmt: skip
def portal_link(customer: str, tenant: str, days: int) -> None:
    """Print a signed link to the customer's own pages: their invoices and credit notes
    (HTML and PDF) and their usage this period. It expires after --days; anyone holding
    it sees what the customer sees, so send it to them alone. `meterline serve` serves it
    (METERLINE_PORTAL_BASE_URL: the address customers reach it at)."""
    from aggregation.handlers import PortalLink
    from portal.pages import PortalLinkError, make_link

    settings = load_settings()
    with opened_store(settings) as connection:
        try:
            url, expires = make_link(connection, settings, PortalLink(tenant, customer, days),
                                     datetime.now(UTC))  # fmt: skip
        except PortalLinkError as error:
            fail(str(error))
    console.print(url, soft_wrap=True, highlight=False)
    errors.print(f"valid until {expires:%Y-%m-%d %H:%M} UTC")
