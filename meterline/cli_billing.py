"""``meterline invoices`` and ``meterline report``: what billing and finance run. With the
embedded engine, run them while no worker holds the store."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click

from meterline.cli_support import (
    Period,
    console,
    corrector,
    errors,
    export_options,
    fail,
    format_option,
    load_book,
    load_settings,
    opened_store,
    previous_month,
    print_rows,
    write_export,
)

_TENANT = click.option("--tenant", default=None, help="Only this tenant.  [default: all]")


Command = TypeVar("Command", bound=Callable[..., Any])


def _period_option(default_help: str) -> Callable[[Command], Command]:
    return click.option("--period", type=Period(), default=None, help=default_help)


@click.group()
def invoices() -> None:
    """Invoices: close a period into drafts, finalize them, read, export and explain them."""


@invoices.command("close")
@_period_option("The billing period.  [default: last month]")
@_TENANT
def close(period: date | None, tenant: str | None) -> None:
    """Create or recompute the period's draft invoices, one per subscription.

    Run it as often as you like: a draft is rewritten only when its content changed, and
    a finalized invoice is never touched (its late usage goes on the next invoice).
    """
    _run_close(period or previous_month(), tenant, finalize=False)


@invoices.command("finalize")
@_period_option("The billing period.  [default: last month]")
@_TENANT
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def finalize(period: date | None, tenant: str | None, yes: bool) -> None:
    """Recompute the period's drafts from the data as it is now and make them immutable.

    Only a period that has ended can be finalized; running it twice finalizes nothing the
    second time.
    """
    month = period or previous_month()
    scope = f"tenant {tenant}" if tenant else "all tenants"
    if not yes and sys.stdin.isatty():
        click.confirm(f"Finalize {month:%Y-%m} for {scope}? It cannot be undone", abort=True)
    _run_close(month, tenant, finalize=True)


def _run_close(period: date, tenant: str | None, *, finalize: bool) -> None:
    from invoicing.closing import ClosingError, close_period, lookback_periods
    from invoicing.ledger import seller_of
    from invoicing.tax import TaxRatesError, policy_of

    settings = load_settings()
    book = load_book(settings)
    with opened_store(settings) as connection:
        fixing = corrector(settings, book, connection, tenant)
        try:
            with console.status(f"closing {period:%Y-%m}…"):
                report = close_period(
                    fixing.sources, book, period, tenant=tenant, finalize=finalize,
                    lookback=lookback_periods(settings.max_event_age_days),
                    seller=seller_of(settings), taxes=policy_of(settings),
                )  # fmt: skip
        except (ClosingError, TaxRatesError) as error:
            fail(str(error))
    if finalize:
        console.print(
            f"{period:%Y-%m}: finalized {report.finalized:,} invoices; "
            f"{report.already_final:,} were already final"
            + (f"; {report.not_ended:,} left as drafts: their period (from a later anchor day) "
               "has not ended" if report.not_ended else "")
        )  # fmt: skip
    else:
        console.print(
            f"{period:%Y-%m}: {report.created:,} drafts created, {report.updated:,} updated, "
            f"{report.unchanged:,} unchanged; {report.already_final:,} invoices already final"
        )
    for problem in report.problems:
        errors.print(f"[yellow]not invoiced:[/] {problem}", highlight=False)


@invoices.command("list")
@_period_option("The billing period.  [default: last month]")
@_TENANT
@click.option("--status", type=click.Choice(["draft", "finalized"]), default=None)
def list_invoices(period: date | None, tenant: str | None, status: str | None) -> None:
    """List the period's invoices: id, subscription, status and totals."""
    from rich.table import Table

    from invoicing.export import money
    from invoicing.sources import Sources

    month = period or previous_month()
    with opened_store(load_settings()) as connection:
        found = Sources.over(connection).ledger.invoices([month], tenant, status=status)
    table = Table(title=f"Invoices {month:%Y-%m} ({len(found):,})")
    for column in ("Invoice", "Tenant", "Subscription", "Status", "Lines", "Total"):
        table.add_column(column, justify="right" if column in ("Lines", "Total") else "left",
                         no_wrap=column == "Invoice")  # fmt: skip
    for invoice in found:
        table.add_row(invoice.invoice_id, invoice.tenant, invoice.subscription, invoice.status,
                      str(len(invoice.lines)),
                      f"{money(invoice.total, invoice.currency)} {invoice.currency}")  # fmt: skip
    if not found:
        table.caption = "no invoices: meterline invoices close --period " + f"{month:%Y-%m}"
    console.print(table)


@invoices.command("show")
@click.argument("invoice_id")
@click.option("--json", "as_json", is_flag=True, help="Print the invoice as JSON.")
def show(invoice_id: str, as_json: bool) -> None:
    """Show one invoice, line by line, with each usage line's tiers."""
    from invoicing.export import to_json

    invoice = _find(invoice_id)
    if as_json:
        click.echo(to_json([invoice]))
        return
    _print_invoice(invoice)


def _find(invoice_id: str) -> Any:
    from invoicing.invoice import period_of_invoice_id
    from invoicing.sources import Sources

    if period_of_invoice_id(invoice_id) is None:
        fail(f"{invoice_id!r} is not an invoice id (they look like INV-202610-1A2B3C4D5E6F7A8B)")
    with opened_store(load_settings()) as connection:
        found = Sources.over(connection).ledger.find(invoice_id)
    if found is None:
        fail(f"no invoice {invoice_id}")
    return found


def _print_invoice(invoice: Any) -> None:
    from rich.table import Table

    from invoicing.export import exact, kind_label, money
    from rating.money import plain, trimmed

    cur = invoice.currency
    who = invoice.customer_name or invoice.customer or "(no customer)"
    table = Table(
        title=f"{invoice.invoice_id} · {invoice.status} · {invoice.period:%Y-%m}"
        + (
            f" · No. {invoice.number_label}, issued {invoice.issued_on}, due {invoice.due_on}"
            if invoice.number
            else ""
        ),
        caption=f"{who} · {invoice.tenant}/{invoice.subscription} · tax "
        f"{trimmed(invoice.tax_rate)}%",
    )
    for column in ("#", "Line", "Kind", "Quantity", "Amount", "Tax"):
        table.add_column(column, justify="left" if column in ("Line", "Kind") else "right")
    for number, line in enumerate(invoice.lines, start=1):
        shown = f"{trimmed(line.quantity)} {line.unit}" if line.unit else ""
        last = number == len(invoice.lines) and not line.breakdown
        table.add_row(str(number), line.description, kind_label(line, invoice.period), shown,
                      money(line.amount, cur), money(line.tax, cur), end_section=last)  # fmt: skip
        for position, part in enumerate(line.breakdown, start=1):
            price = f" @ {plain(part.unit_price)}" if part.unit_price else ""
            last = number == len(invoice.lines) and position == len(line.breakdown)
            table.add_row("", f"[dim]  {part.label}{price}[/]", "",
                          f"[dim]{trimmed(part.units)}[/]" if part.units else "",
                          f"[dim]{exact(part.amount, cur)}[/]", "", end_section=last)  # fmt: skip
    table.add_row("", "subtotal", "", "", money(invoice.subtotal, cur), "")
    table.add_row("", "tax", "", "", money(invoice.tax, cur), "")
    table.add_row("", "[bold]total[/]", "", "", f"[bold]{money(invoice.total, cur)} {cur}[/]", "")
    console.print(table)


@invoices.command("export")
@_period_option("The billing period.  [default: last month]")
@_TENANT
@export_options("invoice")
@click.option("--status", type=click.Choice(["draft", "finalized"]), default=None)
def export(
    period: date | None, tenant: str | None, fmt: str, output: Path | None, status: str | None
) -> None:
    """Export the period's invoices as JSON, CSV (a row per line), printable HTML, or a
    PDF file per invoice."""
    from invoicing.export import render
    from invoicing.sources import Sources

    month = period or previous_month()
    with opened_store(load_settings()) as connection:
        found = Sources.over(connection).ledger.invoices([month], tenant, status=status)
    write_export(found, fmt, output, render=render, name=lambda invoice: invoice.invoice_id,
                 written=f"{len(found):,} invoices of {month:%Y-%m}")  # fmt: skip


@invoices.command("explain")
@click.argument("invoice_id")
@click.argument("line", type=click.IntRange(1))
@click.option(
    "--window", type=click.Choice(["day", "hour"]), default="day", show_default=True,
    help="Width of the windows the events are counted in.",
)  # fmt: skip
def explain(invoice_id: str, line: int, window: str) -> None:
    """Explain one line of an invoice: the events behind usage, the arithmetic of a fee."""
    from rich.table import Table

    from invoicing.explain import ExplainError, explain_line
    from invoicing.sources import Sources
    from rating.money import plain

    invoice = _find(invoice_id)
    settings = load_settings()
    with opened_store(settings) as connection:
        try:
            found = explain_line(Sources.over(connection), load_book(settings), invoice, line,
                                 window)  # fmt: skip
        except ExplainError as error:
            fail(str(error))
    console.print(f"[bold]{invoice.invoice_id} line {line}[/]: {found.line.description}")
    for fact in found.facts:
        console.print(f"  • {fact}", highlight=False)
    if found.windows:
        table = Table(title=f"Events by {window}")
        for column in ("Window (UTC)", "Events", "Quantity", "Arrived after finalization"):
            table.add_column(column, justify="left" if column.startswith("Window") else "right")
        late_shown = any(w.late_events for w in found.windows)
        for w in found.windows:
            table.add_row(f"{w.start:%Y-%m-%d %H:%M}", f"{w.events:,}", plain(w.quantity),
                          f"{w.late_events:,}" if late_shown else "")  # fmt: skip
        console.print(table)
    if found.agrees is False:
        sys.exit(2)


@click.group()
def report() -> None:
    """Analytics: usage by meter and day, top subscriptions, revenue by plan and month, MRR."""


@report.command("usage")
@_period_option("The period.  [default: this month]")
@_TENANT
@format_option
def report_usage(period: date | None, tenant: str | None, fmt: str) -> None:
    """Usage per meter and day (deduplicated events), with a chart per meter."""
    from invoicing.reports import usage_by_day
    from invoicing.sources import Sources
    from meterline.charts import bar_chart
    from rating.money import plain

    settings = load_settings()
    month = period or datetime.now(UTC).date().replace(day=1)
    with opened_store(settings) as connection:
        rows = usage_by_day(Sources.over(connection), load_book(settings), month, tenant)
    if fmt != "table":
        found = [(r.day, r.meter, r.quantity, r.events, r.subscriptions) for r in rows]
        print_rows("", ("day", "meter", "quantity", "events", "subscriptions"), found, fmt)
        return
    if not rows:
        console.print(f"no usage stored for {month:%Y-%m}")
        return
    for meter in sorted({row.meter for row in rows}):
        own = [row for row in rows if row.meter == meter]
        total = sum((row.quantity for row in own), Decimal(0))
        events = sum(row.events for row in own)
        console.print(
            bar_chart(
                f"{meter}, {month:%Y-%m}: {plain(total)} in {events:,} events",
                [
                    (
                        f"{row.day:%m-%d}",
                        row.quantity,
                        f"{plain(row.quantity)} ({row.events:,} ev, {row.subscriptions:,} subs)",
                    )
                    for row in own
                ],
            )
        )


@report.command("top")
@_period_option("The period.  [default: last month]")
@_TENANT
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@format_option
def report_top(period: date | None, tenant: str | None, limit: int, fmt: str) -> None:
    """The subscriptions with the largest amounts in a period."""
    from invoicing.export import money
    from invoicing.reports import top_subscriptions
    from invoicing.sources import Sources
    from meterline.charts import bar_chart

    month = period or previous_month()
    with opened_store(load_settings()) as connection:
        source, rows = top_subscriptions(Sources.over(connection), month, tenant, limit)
    if fmt != "table":
        found = [(r.tenant, r.subscription, r.currency, r.amount, source) for r in rows]
        print_rows("", ("tenant", "subscription", "currency", "amount", "source"), found, fmt)
        return
    if not rows:
        console.print(f"nothing billed in {month:%Y-%m}")
        return
    for currency in sorted({row.currency for row in rows}):
        console.print(
            bar_chart(
                f"Top subscriptions {month:%Y-%m} in {currency}, by {source}",
                [
                    (
                        f"{row.tenant}/{row.subscription}",
                        row.amount,
                        f"{money(row.amount, currency)} {currency}",
                    )
                    for row in rows
                    if row.currency == currency
                ],
                color="green",
            )
        )


@report.command("revenue")
@click.option("--until", type=Period(), default=None, help="Last month.  [default: last month]")
@click.option("--months", type=click.IntRange(1, 120), default=6, show_default=True)
@_TENANT
@format_option
def report_revenue(until: date | None, months: int, tenant: str | None, fmt: str) -> None:
    """Invoiced revenue by plan and month (drafts and finalized), with a chart."""
    from rich.table import Table

    from invoicing.export import money
    from invoicing.reports import revenue_by_plan
    from invoicing.sources import Sources

    last = until or previous_month()
    with opened_store(load_settings()) as connection:
        rows = revenue_by_plan(Sources.over(connection), last, months, tenant)
    if fmt != "table":
        print_rows("", ("month", "plan", "status", "subscriptions", "currency", "amount", "tax"),
                   [(f"{r.period:%Y-%m}", r.plan, r.status, r.subscriptions, r.currency,
                     r.amount, r.tax) for r in rows], fmt)  # fmt: skip
        return
    if not rows:
        console.print("no invoices in those months: meterline invoices close --period YYYY-MM")
        return
    table = Table(title=f"Revenue by plan, {months} months to {last:%Y-%m}")
    for column in ("Month", "Plan", "Status", "Subscriptions", "Amount", "Tax"):
        table.add_column(column, justify="right" if column in ("Subscriptions", "Amount",
                                                               "Tax") else "left")  # fmt: skip
    for row in rows:
        table.add_row(f"{row.period:%Y-%m}", row.plan, row.status, f"{row.subscriptions:,}",
                      f"{money(row.amount, row.currency)} {row.currency}",
                      money(row.tax, row.currency))  # fmt: skip
    console.print(table)
    _per_month_charts("Revenue", [(r.period, r.currency, r.amount) for r in rows], "green")


@report.command("revenue-recognition")
@click.option("--until", type=Period(), default=None, help="Last month.  [default: last month]")
@click.option("--months", type=click.IntRange(1, 120), default=6, show_default=True)
@_TENANT
@click.option("--schedule", "schedule_to", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Also write every entry of the schedule to this CSV, one row per line part "
              "and month, for a ledger to import.")  # fmt: skip
@format_option
def report_revenue_recognition(until: date | None, months: int, tenant: str | None,
                               schedule_to: Path | None, fmt: str) -> None:  # fmt: skip
    """Revenue recognized and deferred by month, plan and currency, from finalized invoices
    and credit notes: fixed fees ratably by day over the days they pay for, usage in the
    period it was consumed, adjustments and credits in the period they correct; net of
    tax. Deferred is billed to date less earned to date (below 0: earned, not billed yet)."""
    from rich.table import Table

    from invoicing.export import money
    from invoicing.reports import revenue_recognition
    from invoicing.sources import Sources

    settings = load_settings()
    last = until or previous_month()
    with opened_store(settings) as connection:
        rows, entries = revenue_recognition(Sources.over(connection), load_book(settings), last,
                                            months, tenant)  # fmt: skip
    if schedule_to is not None:
        _write_schedule(schedule_to, entries)
        errors.print(f"wrote {len(entries):,} schedule entries to {schedule_to}")
    if fmt != "table":
        print_rows("", ("month", "plan", "currency", "billed", "recognized", "deferred"),
                   [(f"{r.month:%Y-%m}", r.plan, r.currency, r.billed, r.recognized, r.deferred)
                    for r in rows], fmt)  # fmt: skip
        return
    if not rows:
        console.print("no finalized invoice in those months: meterline invoices finalize")
        return
    table = Table(title=f"Revenue recognition, {months} months to {last:%Y-%m}")
    for column in ("Month", "Plan", "Billed", "Recognized", "Deferred"):
        table.add_column(column, justify="left" if column in ("Month", "Plan") else "right")
    for row in rows:
        cur = row.currency
        shown = [f"{money(value, cur)} {cur}" for value in (row.billed, row.recognized,
                                                           row.deferred)]  # fmt: skip
        table.add_row(f"{row.month:%Y-%m}", row.plan, *shown)
    console.print(table)
    _per_month_charts("Recognized", [(r.month, r.currency, r.recognized) for r in rows], "green")


def _per_month_charts(title: str, rows: list[tuple[date, str, Decimal]], color: str) -> None:
    """A bar chart per currency of ``rows`` (month, currency, amount), summed by month."""
    from invoicing.export import money
    from meterline.charts import bar_chart

    for currency in sorted({cur for _, cur, _ in rows}):
        monthly: dict[date, Decimal] = {}
        for month, cur, amount in rows:
            if cur == currency:
                monthly[month] = monthly.get(month, Decimal(0)) + amount
        bars = [(f"{month:%Y-%m}", amount, f"{money(amount, currency)} {currency}")
                for month, amount in sorted(monthly.items())]  # fmt: skip
        console.print(bar_chart(f"{title} per month in {currency}", bars, color=color))


def _write_schedule(path: Path, entries: list[Any]) -> None:
    """The schedule as a ledger imports it: the booking date (the month's last day), the
    document and line, what it is, and the exact amount."""
    import csv

    from invoicing.recognition import month_end

    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["date", "document", "line", "kind", "plan", "currency",
                         "service_start", "service_end", "amount"])  # fmt: skip
        for e in sorted(entries, key=lambda e: (e.month, e.document, e.line)):
            writer.writerow([month_end(e.month).isoformat(), e.document, e.line, e.kind, e.plan,
                             e.currency, e.service_start.isoformat(), e.service_end.isoformat(),
                             e.amount])  # fmt: skip


@report.command("accounts")
@click.option("--until", type=Period(), default=None, help="Last month.  [default: last month]")
@click.option("--months", type=click.IntRange(1, 120), default=1, show_default=True,
              help="How many months of invoices to add up.")  # fmt: skip
@_TENANT
@format_option
def report_accounts(until: date | None, months: int, tenant: str | None, fmt: str) -> None:
    """Billing per CRM account (a customer's external_id): its active subscriptions, MRR
    and ARR on the last month's last day, and what its finalized invoices billed in the
    months, less credit notes. The account column is what the CRM knows it by."""
    from invoicing.reports import by_account
    from invoicing.sources import Sources

    settings = load_settings()
    last = until or previous_month()
    with opened_store(settings) as connection:
        rows = by_account(Sources.over(connection), load_book(settings), last, months, tenant)
    print_rows(f"Billing per CRM account, {months} month(s) to {last:%Y-%m}",
               ("tenant", "account", "customer", "name", "currency", "subscriptions", "mrr",
                "arr", "invoiced"),
               [(r.tenant, r.account, r.customer, r.name, r.currency, r.subscriptions, r.mrr,
                 r.arr, r.invoiced) for r in rows], fmt)  # fmt: skip


@report.command("mrr")
@click.option("--until", type=Period(), default=None, help="Last month.  [default: this month]")
@click.option("--months", type=click.IntRange(1, 120), default=12, show_default=True)
@_TENANT
@format_option
def report_mrr(until: date | None, months: int, tenant: str | None, fmt: str) -> None:
    """MRR, ARR and ACV (ARR per active subscription) by month and currency, active
    subscriptions, and the movements: new, expansion, contraction, churned. A
    subscription's MRR is its plan's fixed fees, or its commitment when larger, on the
    month's last day."""
    from rich.table import Table

    from invoicing.export import money
    from invoicing.mrr import mrr_by_month
    from meterline.charts import bar_chart
    from subscriptions.store import SubscriptionStore

    settings = load_settings()
    last = until or datetime.now(UTC).date().replace(day=1)
    with opened_store(settings) as connection:
        subscribers = SubscriptionStore(connection).subscriptions(tenant)
    rows = mrr_by_month(subscribers, load_book(settings), last, months)
    if fmt != "table":
        print_rows("", ("month", "currency", "mrr", "arr", "acv", "active", "new", "expansion",
                        "contraction", "churned"),
                   [(f"{r.month:%Y-%m}", r.currency, r.mrr, r.arr, r.acv, r.active, r.new,
                     r.expansion, r.contraction, r.churned) for r in rows], fmt)  # fmt: skip
        return
    if not rows:
        console.print("no subscriptions: meterline subscriptions import FILE")
        return
    table = Table(title=f"MRR, {months} months to {last:%Y-%m}")
    columns = ("Month", "Currency", "MRR", "ARR", "ACV", "Active", "New", "Expansion",
               "Contraction", "Churned")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("Month", "Currency") else "right")
    for row in rows:
        cur = row.currency
        table.add_row(f"{row.month:%Y-%m}", cur, money(row.mrr, cur), money(row.arr, cur),
                      money(row.acv, cur), f"{row.active:,}", money(row.new, cur),
                      money(row.expansion, cur), money(row.contraction, cur),
                      money(row.churned, cur))  # fmt: skip
    console.print(table)
    for currency in sorted({row.currency for row in rows}):
        console.print(
            bar_chart(
                f"MRR per month in {currency}",
                [
                    (f"{row.month:%Y-%m}", row.mrr, f"{money(row.mrr, currency)} {currency}")
                    for row in rows
                    if row.currency == currency
                ],
                color="magenta",
            )
        )


@click.command("reconcile")
@_TENANT
@click.option("--period", type=Period(), default=None,
              help="One usage month (YYYY-MM).  [default: every month]")  # fmt: skip
@format_option
def reconcile_command(tenant: str | None, period: date | None, fmt: str) -> None:
    """Prove from the store that every acknowledged event is accounted for: per tenant and
    usage month, acknowledged = billed + duplicates + dead-lettered (+ still in flight).
    Exits 1 naming the first subscription where that fails."""
    from aggregation.readers import PipelineReads
    from aggregation.reconcile import reconcile
    from aggregation.sink import PipelineSink

    settings = load_settings()
    with opened_store(settings) as connection:
        found = reconcile(PipelineReads(connection), tenant, period)
        checkpoints = PipelineSink(connection).load_checkpoints(
            settings.events_topic, set(range(settings.topic_partitions))
        )
        notes = _credit_notes_by_month(connection, tenant)
    rows = [(m.tenant, f"{m.month:%Y-%m}", m.acknowledged, m.billed, m.duplicates,
             m.dead_lettered, m.missing, m.forwarded, m.retracted, m.backfilled, m.billable,
             *notes.get((m.tenant, m.month), (0, ""))) for m in found.months]  # fmt: skip
    # Forwarded events are counted again where they were forwarded to (not in acknowledged).
    # Corrections come on top: billable = billed - retracted + backfilled; and the credit
    # notes of the month's invoices, with what they credit.
    columns = ("tenant", "month", "acknowledged", "billed", "duplicates", "dead_lettered",
               "missing", "forwarded", "retracted", "backfilled", "billable", "credit_notes",
               "credited")  # fmt: skip
    print_rows("Reconciliation: acknowledged = billed + duplicates + dead-lettered", columns,
               rows, fmt)  # fmt: skip
    if fmt == "table":
        console.print(_in_flight(settings, checkpoints))
    failure = found.first_failure()
    if failure is not None:
        fail(f"the identity fails: {failure}")
    if fmt == "table":
        console.print(f"[green]the identity holds[/] for {len(rows):,} tenant-months")


def _credit_notes_by_month(connection: Any, tenant: str | None) -> (
    dict[tuple[str, date], tuple[int, str]]
):  # fmt: skip
    """Per tenant and period: how many credit notes its invoices have, and their totals
    by currency ("12.00 EUR; 3.50 USD")."""
    from invoicing.credit_ledger import CreditLedger
    from invoicing.export import money

    totals: dict[tuple[str, date], dict[str, Decimal]] = {}
    counts: dict[tuple[str, date], int] = {}
    for note in CreditLedger(connection).notes(tenant):
        key = (note.tenant, note.period)
        counts[key] = counts.get(key, 0) + 1
        by_currency = totals.setdefault(key, {})
        by_currency[note.currency] = by_currency.get(note.currency, Decimal(0)) + note.total
    return {key: (counts[key], "; ".join(f"{money(amount, cur)} {cur}"
                                         for cur, amount in sorted(totals[key].items())))
            for key in counts}  # fmt: skip


def _in_flight(settings: Any, checkpoints: list[Any]) -> str:
    """What the log holds past the last record the store accounts for, when Kafka is
    reachable: those events are acknowledged and not yet read by a worker."""
    import asyncio

    from base.kafka_admin import log_ends

    if settings.kafka_bootstrap_servers is None:
        return ("in flight: not asked (the embedded broker runs only inside `meterline serve`, "
                "whose clean stop waits until nothing is in flight)")  # fmt: skip
    starts = {c.partition: c.offset + 1 for c in checkpoints}
    try:
        ends = asyncio.run(log_ends(settings.kafka_bootstrap_servers, settings.events_topic,
                                    starts))  # fmt: skip
    except Exception as error:
        return f"in flight: not known (Kafka did not answer: {type(error).__name__})"
    behind = sum(max(0, ends[p] - start) for p, start in starts.items())
    return f"in flight: {behind:,} records (batches of events) in the log, not yet read"
