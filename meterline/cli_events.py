"""``meterline events``: correct closed periods. ``backfill`` adds events missed in them,
``retract`` takes wrong ones back; each shows its preview unless given ``--commit``, and
``corrections`` lists what was done. With the embedded engine, run them while no worker
holds the store."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from meterline.cli_registry import Moment
from meterline.cli_support import (
    console,
    corrector,
    errors,
    fail,
    load_book,
    load_settings,
    opened_store,
)

_COMMIT = click.option("--commit", is_flag=True,
                       help="Store the correction and bill it. Without it, only the preview "
                       "is shown and nothing is written.")  # fmt: skip
_REASON = click.option(
    "--reason", required=True, help="Why: kept with the correction, printed on its credit notes."
)
_BY = click.option(
    "--by", default=None, help="Who asks for it, for the audit trail.  [default: your user name]"
)
_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print the preview (or outcome) as JSON, exactly."
)


@click.group()
def events() -> None:
    """Correct what closed periods billed: backfill missed events, retract wrong ones."""


@events.command("backfill")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", required=True, help="The tenant whose events these are.")
@_REASON
@_BY
@_COMMIT
@_JSON
def backfill(file: Path, tenant: str, reason: str, by: str | None, commit: bool,
             as_json: bool) -> None:  # fmt: skip
    """Add events missed in closed periods (ended more than max_event_age_days ago), each
    once. FILE holds events as POST /v1/events takes them: a JSON array, or one JSON
    object per line. Events already stored are left out, as are events of periods still
    open to live events (send those to POST /v1/events)."""
    settings = load_settings()
    book = load_book(settings)
    parsed, unreadable = _read_events(file.read_bytes(), tenant, book)
    for problem in unreadable:
        errors.print(f"[yellow]left out:[/] {problem}", highlight=False)
    with _corrector(settings, book, tenant) as fixing:
        from invoicing.correcting import CorrectionError

        try:
            proposal = fixing.backfill(tenant, parsed, by=by or _user(), reason=reason)
        except CorrectionError as error:
            fail(str(error))
        _conclude(fixing, proposal, commit=commit, as_json=as_json)


@events.command("retract")
@click.option("--tenant", required=True, help="The tenant whose events these are.")
@click.option("--id", "ids", multiple=True, help="An event id to retract (repeat for several).")
@click.option("--subscription", default=None, help="Retract this subscription's events...")
@click.option("--meter", default=None, help="...of this meter only...")
@click.option("--since", type=Moment(), default=None,
              help="...stamped at or after this moment (UTC)...")  # fmt: skip
@click.option("--until", type=Moment(), default=None,
              help="...and before this one (UTC).")  # fmt: skip
@_REASON
@_BY
@_COMMIT
@_JSON
def retract(tenant: str, ids: tuple[str, ...], subscription: str | None, meter: str | None,
            since: datetime | None, until: datetime | None, reason: str, by: str | None,
            commit: bool, as_json: bool) -> None:  # fmt: skip
    """Take back billed events of closed periods, by id or by subscription, meter and time
    range. They stay in the audit trail, marked with who retracted them and why."""
    settings = load_settings()
    book = load_book(settings)
    with _corrector(settings, book, tenant) as fixing:
        from invoicing.correcting import CorrectionError

        try:
            proposal = fixing.retract(tenant, by=by or _user(), reason=reason, ids=ids,
                                      subscription=subscription, meter=meter,
                                      since=since, until=until)  # fmt: skip
        except CorrectionError as error:
            fail(str(error))
        _conclude(fixing, proposal, commit=commit, as_json=as_json)


@events.command("corrections")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
def corrections(tenant: str | None) -> None:
    """Every correction, oldest first: who, why, what it added or retracted."""
    from rich.table import Table

    from aggregation.corrections import CorrectionStore

    with opened_store(load_settings()) as connection:
        found = CorrectionStore(connection).journal(tenant)
    table = Table("Correction", "Tenant", "Kind", "Status", "Created", "By", "Events",
                  "Periods", "Reason")  # fmt: skip
    for entry in found:
        plan = entry.plan
        periods = sorted({f"{t.subscription} {t.period:%Y-%m}" for t in plan.touched})
        table.add_row(plan.correction, plan.tenant, plan.kind, entry.status,
                      f"{entry.created_at:%Y-%m-%d %H:%M}", plan.by,
                      f"{len(plan.added) or len(plan.retracted):,}", ", ".join(periods),
                      plan.reason)  # fmt: skip
    console.print(table)


@contextmanager
def _corrector(settings: Any, book: Any, tenant: str) -> Iterator[Any]:
    with opened_store(settings) as connection:
        yield corrector(settings, book, connection, tenant)


def _conclude(fixing: Any, proposal: Any, *, commit: bool, as_json: bool) -> None:
    from invoicing.correction_view import proposal_view

    done = fixing.commit(proposal) if commit and not proposal.empty else None
    view = proposal_view(proposal, done)
    if as_json:
        print(json.dumps(view, indent=2))
        return
    _print(view)
    if not proposal.empty and done is None:
        console.print("[bold]preview only[/]: nothing was written; add --commit to make it")


def _print(view: dict[str, Any]) -> None:
    from rich.table import Table

    for refused in view["refused"]:
        errors.print(f"[yellow]left out:[/] {refused['id']} ({refused['subscription']}, "
                     f"{refused['day']}): {refused['reason']}: {refused['detail']}",
                     highlight=False)  # fmt: skip
    if view["duplicates"]:
        console.print(f"{len(view['duplicates']):,} events are stored already and count once")
    if view["already_retracted"]:
        console.print(f"{len(view['already_retracted']):,} events were retracted already")
    if view["status"] == "nothing to change":
        console.print("nothing to change")
        return
    counted = f"{view['added']:,} events added" if view["kind"] == "backfill" else (
        f"{view['retracted']:,} events retracted")  # fmt: skip
    console.print(f"[bold]{view['correction']}[/] ({view['status']}): {counted}")
    table = Table("Invoice", "Period", "Status", "Line", "Quantity", "Amount", "Credited",
                  "Adjusted", "Billed by", title="What it changes")  # fmt: skip
    for found in view["invoices"]:
        for line in found["lines"] or [
            {
                "kind": "",
                "item": "(no change)",
                "quantity": "",
                "amount": "",
                "credited": "",
                "adjusted": "",
            }
        ]:
            table.add_row(found["invoice"], found["period"], found["status"],
                          f"{line['kind']} {line['item']}".strip(), line["quantity"],
                          line["amount"], line["credited"], line["adjusted"],
                          found["billed_by"])  # fmt: skip
    console.print(table)
    for note in view.get("credit_notes", []):
        console.print(f"credit note {note} issued")
    for period in view.get("drafts_closed", []):
        console.print(f"drafts for {period} recomputed")


def _read_events(body: bytes, tenant: str, book: Any) -> tuple[list[Any], list[str]]:
    """The file's events, checked as the gateway checks them but for their age (a closed
    period is old by definition), and what could not be read."""
    from ingest.admission import Admission, OtherTenantError
    from ingest.correction_wire import any_age
    from ingest.wire import BodyError, Format, Item, split

    stripped = body.strip()
    try:
        if stripped[:1] == b"[":
            items = split(stripped, Format.PLAIN)
        else:
            items = [Item(i, line) for i, line in enumerate(stripped.splitlines()) if line.strip()]
    except BodyError as error:
        fail(f"the file is not a JSON array of events nor one event per line: {error}")
    window = any_age(load_settings().event_window())
    try:
        admitted = Admission(book, window).plain_events(tenant, items)
    except OtherTenantError as error:
        fail(f"{error}: a backfill holds one tenant's events")
    return admitted.events, [f"event {r.index} ({r.id or 'no id'}): {r.reason}: {r.detail}"
                             for r in admitted.refused]  # fmt: skip


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
