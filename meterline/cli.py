"""The ``meterline`` command line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import click

from meterline.cli_billing import invoices, reconcile_command, report
from meterline.cli_credit import credit_command, credit_notes, void_command
from meterline.cli_dunning import dunning
from meterline.cli_events import events
from meterline.cli_grants import credits_group
from meterline.cli_payments import payments, report_collections
from meterline.cli_registry import customers, subscriptions
from meterline.cli_support import (
    Period,
    console,
    errors,
    fail,
    handlers,
    load_book,
    load_settings,
    opened_store,
    previous_month,
)
from meterline.cli_webhooks import alerts_group, entitlements_command, webhooks_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """meterline: count usage once, price it exactly, invoice it on time.

    With no KAFKA_BOOTSTRAP_SERVERS set, meterline starts an embedded Kafka-protocol
    broker on 127.0.0.1; with no CLICKHOUSE_URL set, it stores data in the embedded
    ClickHouse engine (chDB) under ./.meterline/. Other settings come from METERLINE_*
    variables or a TOML file named by METERLINE_CONFIG.
    """


@main.command()
@click.option(
    "--subscriptions",
    default=1_000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Demo subscriptions, spread over the price book's plans.",
)
@click.option(
    "--events",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Events to send, duplicates included.",
)
@click.option(
    "--duplicates",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Share of sends that re-send an earlier event (a retrying producer).",
)
@click.option(
    "--bad-share",
    default=0.001,
    show_default=True,
    type=click.FloatRange(0, 0.5),
    help="Share of events no one can bill (they go to the dead-letter topic).",
)
@click.option(
    "--period",
    type=Period(),
    default=None,
    help="Billing period of the demo usage.  [default: last month]",
)
@click.option("--seed", default=7, show_default=True, help="Seed: the same seed, the same demo.")
@click.option(
    "--partitions",
    type=click.IntRange(1, 64),
    default=None,
    help="Partitions of the demo topic.  [default: METERLINE_TOPIC_PARTITIONS or 4]",
)
@click.option(
    "--price-book",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML price book: a file, or a folder of files.  [default: the demo price book]",
)
@click.option(
    "--show",
    default=15,
    show_default=True,
    type=click.IntRange(0),
    help="Invoices to print (the CSV and HTML have them all).",
)
def run(
    subscriptions: int,
    events: int,
    duplicates: float,
    bad_share: float,
    period: date | None,
    seed: int,
    partitions: int | None,
    price_book: Path | None,
    show: int,
) -> None:
    """Run the demo end to end and close its month into draft invoices.

    Generates subscriptions, customers and a month of usage (with duplicates), produces
    it to Kafka, dedupes, aggregates and rates it in a Faust worker, writes rated totals
    to ClickHouse, closes the period into a draft invoice per subscription, and prints
    the largest (every one goes to CSV and printable HTML). Uses its own database
    (meterline_demo), reset on each run, and a fresh topic.
    """
    from meterline.demo.job import DemoError, DemoOptions, run_demo
    from meterline.demo.report import RichProgress, print_outcome

    settings = load_settings(topic_partitions=partitions, price_book=price_book)
    book = load_book(settings)
    options = DemoOptions(
        subscriptions, events, duplicates, period or previous_month(), seed, bad_share
    )
    for name, value in settings.describe().items():
        console.print(f"[dim]{name:>10}:[/] {value}", highlight=False)
    try:
        with RichProgress(console) as progress:
            outcome = run_demo(settings, book, options, progress)
    except DemoError as error:
        fail(str(error))
    print_outcome(console, outcome, settings, show)


@main.command()
def worker() -> None:
    """Run one aggregation worker (Faust) until SIGTERM or Ctrl-C.

    Reads usage events from the events topic, dedupes, aggregates per subscription,
    meter and period, rates, and writes to ClickHouse. Start several with the same
    METERLINE_CONSUMER_GROUP to share partitions. Needs KAFKA_BOOTSTRAP_SERVERS.
    """
    from aggregation.worker import run_worker
    from invoicing.grant_ledger import CreditBalances
    from invoicing.ledger import measure_runs

    settings = load_settings()
    if settings.kafka_bootstrap_servers is None:
        fail("the worker needs KAFKA_BOOTSTRAP_SERVERS (`meterline run` starts a broker for you)")
    assert settings.kafka_bootstrap_servers is not None
    run_worker(settings, settings.kafka_bootstrap_servers, load_book(settings), [measure_runs],
               handlers(), credits=CreditBalances)  # fmt: skip


@main.command()
@click.option("--host", default=None, help="Address to bind.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="[default: 8787]")
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Also run an aggregation worker (embedded mode needs one; with a cluster, workers "
    "usually run on their own).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Gateway processes sharing the port (the gateway is CPU-bound: one per spare core). "
    "Each applies the tenant rate limit on its own.",
)
def serve(host: str | None, port: int | None, worker: bool, processes: int) -> None:
    """Run the ingest gateway until Ctrl-C or SIGTERM.

    POST /v1/events takes CloudEvents or plain JSON, one event or a batch, with an API
    key (`meterline keys create`); GET /openapi.json describes it. With no
    KAFKA_BOOTSTRAP_SERVERS it starts the embedded broker, and with --worker (the
    default) a worker that aggregates, rates and stores what arrives.
    """
    from meterline.serving import ServeError, serve_gateway

    settings = load_settings(gateway_host=host, gateway_port=port)
    try:
        serve_gateway(
            settings, load_book(settings), with_worker=worker, processes=processes,
            say=console.print,
        )  # fmt: skip
    except ServeError as error:
        fail(str(error))


@main.group()
def keys() -> None:
    """API keys for the HTTP API: each acts for one tenant, within its scope."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key acts for.")
@click.option("--name", default="", help="A label to tell keys apart.")
@click.option(
    "--scope",
    type=click.Choice(["ingest", "admin"]),
    default="ingest",
    show_default=True,
    help="ingest: send events and read usage. admin: that, and manage subscriptions.",
)
def create_key(tenant: str, name: str, scope: str) -> None:
    """Create a key and print it once (only its SHA-256 digest is kept)."""
    from ingest.api_keys import KeyRing

    settings = load_settings()
    key, record = KeyRing(settings.api_keys_path).create(tenant, name or tenant, scope)
    errors.print(
        f"{scope} key for tenant {tenant!r} ({record.name}); store it now, it is not kept:"
    )
    console.print(key, highlight=False)


@keys.command("list")
def list_keys() -> None:
    """List keys: tenant, name, hint and creation time (never the key)."""
    from ingest.api_keys import KeyFileError, KeyRing

    try:
        records = KeyRing(load_settings().api_keys_path).records()
    except KeyFileError as error:
        fail(str(error))
    for record in records:
        console.print(f"{record.hint}…  {record.tenant}  {record.scope}  {record.name}  "
                      f"{record.created_at}")  # fmt: skip
    if not records:
        console.print("no keys yet: meterline keys create --tenant T")


@keys.command("revoke")
@click.argument("hint_or_name")
def revoke_key(hint_or_name: str) -> None:
    """Revoke the keys with this hint (as `keys list` shows it) or name."""
    from ingest.api_keys import KeyRing

    gone = KeyRing(load_settings().api_keys_path).revoke(hint_or_name)
    if not gone:
        fail(f"no key has the hint or name {hint_or_name!r}")
    for record in gone:
        console.print(f"revoked {record.hint}…  {record.tenant}  {record.name}")


@main.command()
@click.argument("subscription")
@click.option("--tenant", required=True, help="The subscription's tenant.")
@click.option("--period", type=Period(), default=None, help="[default: this month]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as GET /v1/usage gives it.")
def usage(subscription: str, tenant: str, period: date | None, as_json: bool) -> None:
    """A subscription's usage and amount so far in a period, per meter and group.

    Reads the store; with the embedded engine, while no worker runs (or ask the gateway:
    GET /v1/usage/SUBSCRIPTION).
    """
    import msgspec
    from rich.table import Table

    from aggregation.readers import PipelineReads
    from aggregation.usage import read_usage

    settings = load_settings()
    month = period or datetime.now(UTC).date().replace(day=1)
    with opened_store(settings) as connection:
        answer = read_usage(PipelineReads(connection), load_book(settings), tenant,
                            subscription, month)  # fmt: skip
    if as_json:
        console.print_json(msgspec.json.encode(answer).decode())
        return
    table = Table(title=f"{tenant}/{subscription}, {answer.period} so far")
    for column in ("Meter", "Group", "Plan", "Quantity", "Amount"):
        table.add_column(column, justify="right" if column in ("Quantity", "Amount") else "left")
    for line in answer.lines:
        group = ", ".join(f"{k}={v}" for k, v in (line.group or {}).items())
        table.add_row(line.meter, group, f"{line.plan} v{line.plan_version}",
                      f"{line.quantity} {line.unit}", f"{line.amount} {line.currency}")  # fmt: skip
    for currency, total in answer.totals.items():
        table.add_row("[bold]total[/]", "", "", "", f"[bold]{total} {currency}[/]")
    if not answer.lines:
        table.caption = "no usage rated for this subscription in this period"
    console.print(table)


@main.command()
def openapi() -> None:
    """Print the gateway's OpenAPI document (the repository keeps a copy)."""
    from ingest.openapi import rendered

    click.echo(rendered(), nl=False)


@main.command()
@click.option(
    "--plans",
    "plans_path",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML price book: a file or a folder.  [default: METERLINE_PRICE_BOOK or the demo's]",
)
@click.option("--plan", "plan_id", required=True, help="Plan id.")
@click.option("--meter", default=None, help="Meter id (needed when the plan has several charges).")
@click.option(
    "--quantity",
    required=True,
    help="Period-to-date quantity, in the meter's units (for a percentage charge: one "
    "transaction's amount, beyond the period's free ones).",
)
@click.option(
    "--version", "version", type=click.IntRange(min=1), default=None,
    help="Plan version.  [default: the newest]",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def price(
    plans_path: Path | None,
    plan_id: str,
    meter: str | None,
    quantity: str,
    version: int | None,
    as_json: bool,
) -> None:
    """Price a quantity under a plan and show the breakdown per tier.

    The amount and the breakdown come from the rating kernels the pipeline uses; the
    Decimal oracle checks the amount to the nano-unit.
    """
    import json

    from rich.table import Table

    from rating.money import plain
    from rating.quote import QuoteError, quote

    settings = load_settings(price_book=plans_path)
    try:
        result = quote(load_book(settings), plan_id, meter, quantity, version)
    except QuoteError as error:
        fail(str(error))
    if as_json:
        console.print_json(json.dumps(result.as_dict()))
        return
    table = Table(
        title=f"{result.plan} v{result.version} / {result.meter} ({result.model}): "
        f"{result.quantity} units"
    )
    for column in ("Part", "Units", "Unit price", "Flat fee", "Amount"):
        table.add_column(column, justify="left" if column == "Part" else "right")
    for part in result.parts:
        table.add_row(
            part.label, *(plain(value) for value in (part.units, part.unit_price, part.flat_fee,
                                                     part.amount))
        )  # fmt: skip
    if result.adjustment:
        table.add_row(f"{result.adjustment} applies", "", "", "", "")
    total = f"{plain(result.amount)} {result.currency}"
    table.add_row("[bold]total[/]", "", "", "", f"[bold]{total}[/]")
    console.print(table)


@main.group()
def db() -> None:
    """ClickHouse schema: numbered migrations."""


@db.command()
def migrate() -> None:
    """Apply pending migrations (running it twice applies nothing the second time)."""
    with opened_store(load_settings(), migrate=False) as connection:
        applied = connection.migrate()
    for migration in applied:
        console.print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        console.print("nothing to apply: the schema is up to date")


@db.command()
def status() -> None:
    """List applied and pending migrations."""
    from base import migrations

    with opened_store(load_settings(), migrate=False) as connection:
        done = migrations.applied_versions(connection.client, connection.database)
    for migration in migrations.available():
        state = "applied" if migration.version in done else "pending"
        console.print(f"{migration.version:04d}_{migration.name}  {state}")


main.add_command(customers)
main.add_command(subscriptions)
invoices.add_command(credit_command)
invoices.add_command(void_command)
main.add_command(invoices)
main.add_command(credit_notes)
main.add_command(events)
main.add_command(payments)
main.add_command(dunning)
main.add_command(credits_group)
main.add_command(webhooks_group)
main.add_command(alerts_group)
main.add_command(entitlements_command)
report.add_command(report_collections)
main.add_command(report)
main.add_command(reconcile_command)
