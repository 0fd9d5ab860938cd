"""What every ``meterline`` command shares: the consoles, the month argument, settings,
the store and the price book, each failing with a message rather than a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console

from base.settings import Settings
from meterline.demo import price_book_path

# A terminal's own width; piped or redirected, wide enough that no table is ever cut (rich
# would otherwise assume 80 columns and shorten what does not fit with an ellipsis).
console = Console(stderr=False, width=None if sys.stdout.isatty() else 10_000)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 10_000)

FORMATS = ("table", "csv", "json")


def format_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--format table|csv|json`` for a command that prints rows with ``print_rows``."""
    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
        help="A table for people, or CSV or JSON (exact decimal strings) for programs.",
    )(command)  # fmt: skip


def print_rows(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    """Rows as a table (numbers right-aligned, folded rather than cut when the terminal is
    narrow), as CSV with a header, or as a JSON array of objects; values as ``str`` gives
    them, so amounts keep every digit."""
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(value) for value in row] for row in rows])
        return
    if fmt == "json":
        import json

        print(json.dumps([{name: _json(value) for name, value in zip(columns, row, strict=True)}
                          for row in rows], indent=2))  # fmt: skip
        return
    from rich.table import Table

    table = Table(title=title)
    for index, name in enumerate(columns):
        numeric = bool(rows) and isinstance(rows[0][index], int | float | Decimal)
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(_text(value) for value in row))
    console.print(table)


def _text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}"
    return "" if value is None else str(value)


def _json(value: Any) -> Any:
    if isinstance(value, Decimal | date):
        return str(value)
    return value


class Period(click.ParamType):
    name = "YYYY-MM"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            parsed = datetime.strptime(value, "%Y-%m")
        except ValueError:
            self.fail(f"{value!r} is not a month like 2026-10", param, ctx)
        return date(parsed.year, parsed.month, 1)


def export_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format json|csv|html|pdf`` and ``--output`` for an export of ``what``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--output", "-o", type=click.Path(path_type=Path), default=None,
            help="Write to this file (for pdf: this folder, a file per "
            f"{what}).  [default: standard output]",
        )(command)  # fmt: skip
        return click.option(
            "--format", "fmt", type=click.Choice(["json", "csv", "html", "pdf"]),
            default="json", show_default=True,
            help=f"html: one printable page per {what}; pdf: a PDF file per {what}.",
        )(command)  # fmt: skip

    return decorate


def write_export(
    documents: Sequence[Any],
    fmt: str,
    output: Path | None,
    *,
    render: Callable[[Sequence[Any], str], str],
    name: Callable[[Any], str],
    written: str,
) -> None:
    """The export on standard output, or in ``output`` (saying ``written`` on stderr); a
    PDF per document in the folder ``output``."""
    if fmt == "pdf":
        if output is None:
            fail("--format pdf writes a file per document: give the folder with --output")
        from invoicing.pdf import write_pdfs

        paths = write_pdfs(documents, output, name, lambda some: render(some, "html"))
        errors.print(f"wrote {written} to {output}/ as {len(paths):,} PDF files")
        return
    text = render(documents, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    errors.print(f"wrote {written} to {output}")


def previous_month() -> date:
    today = datetime.now(UTC).date()
    return date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise click.ClickException(f"invalid settings: {problems}") from None


def fail(message: str) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(1)


@contextmanager
def opened_store(settings: Settings, *, migrate: bool = True) -> Iterator[Any]:
    """The store's connection for one command, its schema brought up to date here and only
    here (``migrate=False`` for the commands that report on migrations); a store that
    cannot be opened is an error, not a traceback (with chDB, most often because a worker
    holds the data directory). Each stage's store is made over it."""
    from base.clickhouse import Connection, StoreError

    try:
        connection = Connection.open(settings, migrate=migrate)
    except StoreError as error:
        fail(f"{error} (with the embedded engine, is a worker or `meterline serve` running?)")
    try:
        yield connection
    finally:
        connection.close()


def load_book(settings: Settings) -> Any:
    from rating.loading import load_price_book
    from rating.plans import PriceBookError

    try:
        return load_price_book(price_book_path(settings))
    except PriceBookError as error:
        fail(str(error))


def import_rows(
    settings: Settings,
    noun: str,
    read: Callable[[], Sequence[Any]],
    write: Callable[[Any, Sequence[Any], datetime], None],
) -> None:
    """Read a registry file (``read`` raises ``SubscriptionFileError`` naming every bad
    row) and write it whole with ``write(subscription_store, rows, now)``; rows are
    versioned by the time of the import, so a later import of the same row wins."""
    from subscriptions.imports import SubscriptionFileError
    from subscriptions.store import SubscriptionStore

    try:
        rows = read()
    except SubscriptionFileError as error:
        fail(str(error))
    with opened_store(settings) as connection:
        write(SubscriptionStore(connection), rows, datetime.now(UTC))
    console.print(f"imported {len(rows):,} {noun} into {settings.clickhouse_database}")


def command_name() -> str:
    """How to run meterline again from here: `meterline` when that is on the PATH, else
    the path this process was started by (`.venv/bin/meterline` on a fresh clone)."""
    import shutil
    from pathlib import Path

    started = Path(sys.argv[0]).resolve()
    on_path = shutil.which("meterline")
    if on_path and Path(on_path).resolve() == started:
        return "meterline"
    try:
        return str(started.relative_to(Path.cwd()))
    except ValueError:
        return str(started) if started.name == "meterline" else "meterline"


def corrector(settings: Settings, book: Any, connection: Any, tenant: str | None) -> Any:
    """The store's corrector (``invoicing.correcting``), once it has finished any
    correction a crash left pending (of ``tenant``): what every command that corrects or
    bills runs first, so none reads a correction half made."""
    from invoicing.correcting import Corrector

    fixing = Corrector.of(connection, book, settings)
    for finished in fixing.finish_pending(tenant):
        errors.print(f"finished correction {finished}, which a crash had left pending")
    return fixing


def handlers() -> dict[str, Any]:
    """What the gateway and the worker answer for the stages above them
    (``aggregation.handlers``): corrections, the customer portal, dunning runs, payments,
    credits, alert rules and webhooks."""
    from aggregation.alert_api import answer_alerts
    from aggregation.handlers import (
        ALERTS,
        CORRECTIONS,
        CREDITS,
        DELIVERED,
        DUNNING,
        PAYMENTS,
        PORTAL,
        PORTAL_LINK,
        WEBHOOK_ENDPOINTS,
        WEBHOOKS,
    )
    from invoicing.correction_api import answer_correction
    from invoicing.dunning_api import answer_delivered, answer_dunning
    from invoicing.grant_api import answer_credits
    from invoicing.payment_api import answer_payment
    from portal.pages import answer_link, answer_page
    from webhooks import api as webhook_api

    return {CORRECTIONS: answer_correction, PORTAL: answer_page, PORTAL_LINK: answer_link,
            DUNNING: answer_dunning, DUNNING + DELIVERED: answer_delivered,
            PAYMENTS: answer_payment, CREDITS: answer_credits, ALERTS: answer_alerts,
            WEBHOOKS: webhook_api.answer_run, WEBHOOKS + DELIVERED: webhook_api.answer_delivered,
            WEBHOOK_ENDPOINTS: webhook_api.answer_endpoints}  # fmt: skip
