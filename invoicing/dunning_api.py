"""A dunning run asked of whoever holds the store (``meterline serve`` asks it on a
schedule, ``dunning_interval_hours``): today's steps for every tenant, and a summary."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from aggregation.handlers import Answer
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.dunning_ledger import DunningLedger
from invoicing.dunning_run import run_dunning
from invoicing.payment_ledger import PaymentLedger
from invoicing.sources import Sources
from rating.plans import PriceBook


def answer_dunning(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """200 with what the run did. A cancellation it makes reaches running workers from the
    store (their directory reloads it), so nothing is published here."""
    report = run_dunning(Sources.over(connection), PaymentLedger(connection),
                         DunningLedger(connection), datetime.now(UTC).date())  # fmt: skip
    summary = {"taken": len(report.taken), "delivered": report.delivered,
               "undelivered": report.undelivered, "problems": report.problems,
               "cancelled": [f"{r.tenant}/{r.subscription}" for r in report.cancelled]}  # fmt: skip
    return Answer(200, "application/json", msgspec.json.encode(summary))
