"""A correction's commit killed with SIGKILL right after each of its writes, then finished
by the next command that corrects or bills: the store ends as an uninterrupted run leaves
it (invoices, credit notes and their gapless numbers, rated totals, the journal), and
until it is finished nothing of the correction is billable.

Five corrections in a row, each killed at another point: after its journal row, after
its events and retractions, after the first of its rewritten totals, after its first
credit note, and after its drafts are recomputed. The same five run without a kill in
another store (in this process) give the expected state.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from base.events import UsageEvent
from base.settings import Settings
from invoicing.closing import close_period
from invoicing.correcting import Corrector
from meterline.worker_process import settings_env
from tests.integration.test_invoices import AUG, BOOK, TENANT, seed_scenario
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BACKFILL = [  # (subscription, meter, quantity, day of August) in the file's shape
    ("a", "api_calls", 700, 30),
    ("b", "api_calls", 2500, 4),
]
STEPS: list[tuple[str, str, list[str]]] = [
    # (what is killed, after its first call, the correction asked, as the CLI takes it)
    ("aggregation.corrections:CorrectionStore.record", "retract", ["--id", "e2"]),
    ("aggregation.corrections:CorrectionStore.store_changes", "backfill", ["0"]),
    ("invoicing.credit_ledger:CreditLedger.write", "retract", ["--id", "e3"]),
    ("aggregation.corrections:CorrectionStore.rewrite_totals", "backfill", ["1"]),
    ("invoicing.correcting:close_period", "retract", ["--id", "e1"]),
]


def asked(kind: str, given: list[str], files: Path) -> list[str]:
    common = ["--tenant", TENANT, "--reason", "kill test", "--by", "tests", "--commit"]
    if kind == "backfill":
        sub, meter, quantity, day = BACKFILL[int(given[0])]
        batch = files / f"backfill-{given[0]}.ndjson"
        batch.write_text(f'{{"id": "late-{given[0]}", "subscription": "{sub}", "meter": '
                         f'"{meter}", "quantity": {quantity}, '
                         f'"timestamp": "2026-08-{day:02d}T12:00:00Z"}}\n')  # fmt: skip
        return ["events", "backfill", str(batch), *common]
    return ["events", "retract", *given, *common]


def run(settings: Settings, *args: str, kill_after: str | None = None) -> int:
    env = settings_env(settings, "")
    del env["KAFKA_BOOTSTRAP_SERVERS"]
    command = ([sys.executable, "-m", "tests.faults.kill_after", kill_after, "1", *args]
               if kill_after else [sys.executable, "-m", "meterline", *args])  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, timeout=300, check=False)
    if not kill_after:
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return done.returncode


def corrected_in_process(settings: Settings) -> None:
    """The five corrections without a kill, in this process (quicker than five commands)."""
    store = Stores.open(settings)
    try:
        fixing = Corrector.of(store.connection, BOOK, settings)
        for _, kind, given in STEPS:
            if kind == "backfill":
                sub, meter, quantity, day = BACKFILL[int(given[0])]
                late = UsageEvent(f"late-{given[0]}", TENANT, sub, meter, quantity,
                                  datetime(2026, 8, day, 12, tzinfo=UTC))  # fmt: skip
                proposal = fixing.backfill(TENANT, [late], by="tests", reason="kill test")
            else:
                proposal = fixing.retract(TENANT, by="tests", reason="kill test", ids=given[1:])
            fixing.commit(proposal)
    finally:
        store.close()


def seeded(settings: Settings) -> None:
    store = Stores.open(settings)
    try:
        seed_scenario(store)
        close_period(store.sources, BOOK, AUG, finalize=True)
    finally:
        store.close()


def state(settings: Settings) -> dict[str, Any]:
    """What a correction leaves, as rows: every table it writes, without the row versions
    and write times a finished commit may give otherwise."""
    store = Stores.open(settings)
    table, query = store.connection.table, store.connection.client.query
    try:
        return {
            "journal": query(f"SELECT tenant, correction, kind, status, requested_by, reason "
                             f"FROM {table('corrections')} FINAL ORDER BY correction").result_rows,
            "retracted": query(f"SELECT subscription, meter, event_id, correction FROM "
                               f"{table('retracted_events')} FINAL ORDER BY event_id").result_rows,
            "billable": query(f"SELECT subscription, meter, event_id, quantity FROM "
                              f"{table('billable_events')} ORDER BY event_id").result_rows,
            "totals": query(f"SELECT subscription, meter, period_start, plan_version, group_key, "
                            f"quantity, amount, events FROM {table('rated_usage')} FINAL "
                            "ORDER BY ALL").result_rows,
            "notes": query(f"SELECT number, invoice_id, subtotal, tax, correction FROM "
                           f"{table('credit_notes')} FINAL ORDER BY number").result_rows,
            "note_lines": query(f"SELECT number, line, amount, tax, quantity FROM "
                                f"{table('credit_note_lines')} FINAL ORDER BY ALL").result_rows,
            "invoices": query(f"SELECT invoice_id, status, revision, digest, number FROM "
                              f"{table('invoices')} FINAL ORDER BY invoice_id").result_rows,
            "lines": query(f"SELECT invoice_id, line, kind, item, applies_to, quantity, amount, "
                           f"tax FROM {table('current_invoice_lines')} ORDER BY ALL").result_rows,
        }  # fmt: skip
    finally:
        store.close()


def test_a_commit_killed_after_each_write_is_finished_by_the_next_command(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    clean = settings_factory(tmp_path / "clean")
    faulty = settings_factory(tmp_path / "faulty", clickhouse_database=clean.clickhouse_database)
    for settings in (clean, faulty):
        seeded(settings)
    files = tmp_path / "files"
    files.mkdir()
    corrected_in_process(clean)
    expected = state(clean)
    assert [row[3] for row in expected["journal"]] == ["committed"] * len(STEPS)
    # A credit note per retraction, and one for the commitment's true-up that b's backfill
    # makes smaller; numbered from 1 without a gap.
    assert [row[0] for row in expected["notes"]] == [1, 2, 3, 4]
    run(clean, "invoices", "close", "--period", "2026-09")
    assert state(clean) == expected, "a commit leaves no draft for a later close to change"

    for number, (target, kind, given) in enumerate(STEPS):
        before = state(faulty)
        assert run(faulty, *asked(kind, given, files), kill_after=target) == -9, target
        cut = state(faulty)
        statuses = sorted(row[3] for row in cut["journal"])
        assert statuses == ["committed"] * number + ["pending"], f"killed after {target}"
        assert cut["billable"] == before["billable"], (
            f"killed after {target}: a correction not committed is not billable"
        )
        # Finished by whichever command comes next: the same one again, or a close.
        if number % 2:
            run(faulty, "invoices", "close", "--period", "2026-09")
        else:
            run(faulty, *asked(kind, given, files))
    finished = state(faulty)
    assert finished["journal"] == expected["journal"]
    for name in ("retracted", "billable", "totals", "notes", "note_lines", "lines"):
        assert finished[name] == expected[name], name
    # Drafts may have more revisions where a finished commit closed them again; their
    # content (the digest) and the finalized invoices' numbers are the same.
    assert [(i, s, d, n) for i, s, _, d, n in finished["invoices"]] == [
        (i, s, d, n) for i, s, _, d, n in expected["invoices"]
    ]
