"""What every ``meterline`` command shares: the consoles, the month argument, settings,
the store and the price book, each failing with a message rather than a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console

from meterline.settings import Settings

console = Console(stderr=False)
errors = Console(stderr=True)


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


def fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(1)


@contextmanager
def opened_store(settings: Settings) -> Iterator[Any]:
    """The store for one command; a store that cannot be opened is an error, not a
    traceback (with chDB, most often because a worker holds the data directory)."""
    from invoicing.store import Store, StoreError

    try:
        store = Store.connect(settings)
    except StoreError as error:
        fail(f"{error} (with the embedded engine, is a worker or `meterline serve` running?)")
    try:
        yield store
    finally:
        store.close()


def load_book(settings: Settings) -> Any:
    from rating.plans import PriceBookError, load_price_book

    try:
        return load_price_book(settings.price_book_path)
    except PriceBookError as error:
        fail(str(error))


def import_rows(
    settings: Settings,
    noun: str,
    read: Callable[[], Sequence[Any]],
    write: Callable[[Any, Sequence[Any], datetime], None],
) -> None:
    """Read a registry file (``read`` raises ``SubscriptionFileError`` naming every bad
    row) and write it whole with ``write(store, rows, now)``; rows are versioned by the
    time of the import, so a later import of the same row wins."""
    from invoicing.subscription_import import SubscriptionFileError

    try:
        rows = read()
    except SubscriptionFileError as error:
        fail(str(error))
    with opened_store(settings) as store:
        store.migrate()
        write(store, rows, datetime.now(UTC))
    console.print(f"imported {len(rows):,} {noun} into {settings.clickhouse_database}")
