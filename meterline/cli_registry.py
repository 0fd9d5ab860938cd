"""``meterline subscriptions`` and ``meterline customers``: the registry billing reads.
With the embedded engine, run them while no worker holds the store; with a ClickHouse
server, running workers see a change within ``subscription refresh`` (30 s)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from meterline.cli_support import (
    console,
    fail,
    import_rows,
    load_book,
    load_settings,
    opened_store,
)


def _version(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


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
    started_at, and optionally ended_at) or a JSON array of such objects. A day means
    midnight UTC; ended_at is exclusive. A row for a known subscription replaces it. One
    bad row rejects the whole file, naming each problem.
    """
    from invoicing.store import SubscriptionChange
    from invoicing.subscription_import import read_subscriptions

    settings = load_settings()
    book = load_book(settings)

    def write(store: Any, rows: Sequence[Any], now: datetime) -> None:
        store.write_subscriptions(rows, version=_version(now))
        store.record_changes(
            [SubscriptionChange(r.tenant, r.subscription, now, "imported", r.started_at, r.plan,
                                f"from {path.name}") for r in rows]
        )  # fmt: skip

    import_rows(settings, "subscriptions", lambda: read_subscriptions(path, book), write)


_TENANT = click.option("--tenant", required=True, help="The subscription's tenant.")


@subscriptions.command("cancel")
@click.argument("subscription")
@_TENANT
@click.option("--at", "at", type=Moment(), default=None, help="When it ends.  [default: now]")
@click.option("--at-period-end", is_flag=True, help="End it when the current period ends.")
def cancel(subscription: str, tenant: str, at: datetime | None, at_period_end: bool) -> None:
    """End a subscription: now, at a time (--at), or at the end of the period. Usage
    stamped from then on is refused (subscription_ended); fixed fees and the commitment
    are prorated to the day. An end inside a finalized period is refused."""
    from invoicing import lifecycle

    if at is not None and at_period_end:
        fail("give --at or --at-period-end, not both")
    now = datetime.now(UTC)
    moment = lifecycle.period_end(now) if at_period_end else at or now

    def end(row: Any, last_finalized: Any) -> Any:
        return lifecycle.cancel(row, moment, last_finalized)

    _change(tenant, subscription, "cancelled", end, moment, now)


@subscriptions.command("renew")
@click.argument("subscription")
@_TENANT
def renew(subscription: str, tenant: str) -> None:
    """Remove a subscription's end, so it is billed on (unless that end falls in a
    finalized period)."""
    from invoicing import lifecycle

    now = datetime.now(UTC)
    _change(tenant, subscription, "renewed", lifecycle.renew, None, now)


def _change(
    tenant: str, subscription: str, kind: str, apply: Any, effective: datetime | None,
    now: datetime,
) -> None:  # fmt: skip
    from invoicing.lifecycle import LifecycleError
    from invoicing.store import SubscriptionChange

    settings = load_settings()
    with opened_store(settings) as store:
        store.migrate()
        row = store.subscription(tenant, subscription)
        if row is None:
            fail(f"no subscription {subscription!r} for tenant {tenant!r}")
        try:
            changed = apply(row, store.last_finalized_period(tenant, subscription))
        except LifecycleError as error:
            fail(str(error))
        store.write_subscriptions([changed], version=_version(now))
        detail = f"ends {changed.ended_at.isoformat()}" if changed.ended_at else "no end"
        store.record_changes(
            [SubscriptionChange(tenant, subscription, now, kind, effective, changed.plan, detail)]
        )
    console.print(f"{tenant}/{subscription} {kind}: {detail}")


@subscriptions.command("show")
@click.argument("subscription")
@_TENANT
def show(subscription: str, tenant: str) -> None:
    """A subscription as billing sees it, and the history of its changes."""
    from rich.table import Table

    with opened_store(load_settings()) as store:
        store.migrate()
        row = store.subscription(tenant, subscription)
        if row is None:
            fail(f"no subscription {subscription!r} for tenant {tenant!r}")
        history = store.history(tenant, subscription)
        final = store.last_finalized_period(tenant, subscription)
    ends = row.ended_at.isoformat() if row.ended_at else "no end"
    finalized = f"invoices finalized up to {final:%Y-%m}" if final else "no invoice finalized"
    console.print(
        f"[bold]{tenant}/{subscription}[/]: customer {row.customer}, plan {row.plan}, from "
        f"{row.started_at.isoformat()} to {ends}; {finalized}",
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
    """List subscriptions: plan, customer, start and end."""
    from rich.table import Table

    with opened_store(load_settings()) as store:
        store.migrate()
        found = store.subscribers(tenant)
    table = Table(title=f"Subscriptions ({len(found):,}; showing up to {limit:,})")
    for column in ("Tenant", "Subscription", "Customer", "Plan", "From", "Until"):
        table.add_column(column)
    for sub in found[:limit]:
        until = sub.active_until.isoformat() if sub.active_until else ""
        table.add_row(sub.tenant, sub.subscription, sub.customer, sub.plan,
                      sub.active_from.isoformat(), until)  # fmt: skip
    console.print(table)


@click.group()
def customers() -> None:
    """Customers: who pays, their CRM reference and their tax rate."""


@customers.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_customers(path: Path) -> None:
    """Import customers from a CSV (header: tenant, customer, name, tax_rate, and optionally
    external_id) or a JSON array of such objects. tax_rate is a percentage (8.25). A row
    for a known customer replaces it; one bad row rejects the whole file."""
    from invoicing.subscription_import import read_customers

    def write(store: Any, rows: Sequence[Any], now: datetime) -> None:
        store.write_customers(rows, version=_version(now))

    import_rows(load_settings(), "customers", lambda: read_customers(path), write)
