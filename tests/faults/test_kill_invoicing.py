"""`meterline invoices close` and `finalize` killed with SIGKILL part-way, then run again:
the invoices are the ones an uninterrupted run writes, each subscription's once, and a
finalized invoice is frozen once. Two copies of the same store: one closed and finalized
without faults, the other with a kill in each step."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from base.settings import Settings
from invoicing.credits import FREE, PAID, Grant
from meterline.cli_support import previous_month
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store
from meterline.worker_process import settings_env
from rating.loading import load_price_book
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SEED = int(os.environ.get("METERLINE_FAULT_SEED", "20261201"))
SUBSCRIPTIONS = 8_000
HEADER = 10  # the columns of an invoice's row in ``invoices``; a line's has 7


def command(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = settings_env(settings, "")
    del env["KAFKA_BOOTSTRAP_SERVERS"]
    return subprocess.Popen([sys.executable, "-m", "meterline", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def finished(settings: Settings, *args: str) -> float:
    """Run to the end; how long it took."""
    began = time.monotonic()
    process = command(settings, *args)
    output = process.communicate(timeout=600)[0].decode(errors="replace")
    assert process.returncode == 0, output
    return time.monotonic() - began


def killed_part_way(settings: Settings, seconds: float, status: str, *args: str) -> int:
    """SIGKILL after ``seconds``; how many invoices had ``status`` then. A kill that came
    before the first write is tried again later, so that the rerun has a half-done run
    to finish."""
    for attempt in range(5):
        process = command(settings, *args)
        time.sleep(seconds * (1 + attempt / 2))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        done = sum(1 for row in invoices(settings) if len(row) == HEADER and row[2] == status)
        if done:
            return done
    raise AssertionError(f"{args} wrote no {status} invoice in {seconds * 3:.1f} s")


def invoices(settings: Settings) -> list[tuple[Any, ...]]:
    store = Stores.open(settings)
    try:
        heads = store.connection.client.query(
            "SELECT invoice_id, subscription, status, currency, subtotal, tax, total, line_count, "
            f"digest, number FROM {store.connection.table('invoices')} FINAL ORDER BY invoice_id"
        ).result_rows
        lines = store.connection.client.query(
            "SELECT invoice_id, line, kind, item, quantity, amount, tax "
            f"FROM {store.connection.table('current_invoice_lines')} ORDER BY invoice_id, line"
        ).result_rows
    finally:
        store.close()
    return [*heads, *lines]


def test_close_and_finalize_killed_part_way_then_rerun_write_each_invoice_once(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    book = load_price_book(PRICE_BOOK)
    period = previous_month()
    subs = generator.subscriptions(SUBSCRIPTIONS, list(book.versions), SEED, period)
    month = f"{period:%Y-%m}"
    clean = settings_factory(tmp_path / "clean")
    faulty = settings_factory(tmp_path / "faulty",
                              clickhouse_database=clean.clickhouse_database)  # fmt: skip
    # Prepaid credits for one customer in seven (two grants each, one paid, and one in
    # units of calls), so that the kills also land between invoices that share a grant's
    # balance.
    grants = [
        Grant(sub.tenant, f"G-{sub.customer}-{n}", sub.customer, "", book.plan(sub.plan).currency,
              Decimal(rng.randint(100, 5_000)).scaleb(-2), n, period, None,
              PAID if n else FREE, Decimal(rng.randint(100, 5_000)).scaleb(-2) if n else
              Decimal(0), "kill test")
        for sub in subs[::7] for n in (0, 1)
    ] + [
        Grant(sub.tenant, f"G-{sub.customer}-calls", sub.customer, "", "",
              Decimal(rng.randint(10, 2_000)), 0, period, reason="kill test", meter="api_calls")
        for sub in subs[::7]
    ]  # fmt: skip
    for settings in (clean, faulty):
        prepare_store(settings, subs)
        store = Stores.open(settings)
        try:
            store.sources.grants.write(grants)
        finally:
            store.close()

    close_seconds = finished(clean, "invoices", "close", "--period", month)
    drafts = killed_part_way(faulty, rng.uniform(0.4, 0.9) * close_seconds, "draft",
                             "invoices", "close", "--period", month)  # fmt: skip
    finished(faulty, "invoices", "close", "--period", month)
    assert invoices(faulty) == invoices(clean)

    finalize_seconds = finished(clean, "invoices", "finalize", "--period", month, "--yes")
    frozen = killed_part_way(faulty, rng.uniform(0.4, 0.9) * finalize_seconds, "finalized",
                             "invoices", "finalize", "--period", month, "--yes")  # fmt: skip
    finished(faulty, "invoices", "finalize", "--period", month, "--yes")
    after = invoices(faulty)
    assert after == invoices(clean)
    credited = [row for row in after if len(row) != HEADER and row[2] == "credit"]
    assert len(credited) >= len(grants) // 2, "the grants were applied"
    statuses = {row[2] for row in after if len(row) == HEADER}
    print(f"\nseed {SEED}: {SUBSCRIPTIONS:,} subscriptions; close took {close_seconds:.1f} s, "
          f"finalize {finalize_seconds:.1f} s; killed after {drafts:,} drafts and after "
          f"{frozen:,} finalized, and run again: "
          f"{sum(1 for row in after if len(row) == HEADER):,} invoices, all {statuses}, "
          f"the same as without the kills ({datetime.now(UTC):%H:%M})")  # fmt: skip
    assert statuses == {"finalized"}
    # Each finalized invoice has the number the uninterrupted run gave it (compared
    # above), and the numbers run from 1 with no gap and no repeat.
    numbers = sorted(row[9] for row in after if len(row) == HEADER)
    assert numbers == list(range(1, len(numbers) + 1))
