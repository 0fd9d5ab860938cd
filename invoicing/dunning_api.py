"""A dunning run asked of whoever holds the store (``meterline serve`` asks it on a
schedule, ``dunning_interval_hours``): today's steps for every tenant, and the events to
deliver, which the gateway delivers (the holder never waits on a receiver) and reports
back (``answer_delivered``)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from aggregation.handlers import Answer, Outcomes, Outgoing
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.dunning_ledger import DunningLedger
from invoicing.dunning_run import Delivered, DunningReport, pending, record_deliveries, take_steps
from invoicing.payment_ledger import PaymentLedger
from invoicing.sources import Sources
from rating.plans import PriceBook

_outcomes = msgspec.json.Decoder(Outcomes)


def answer_dunning(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """200 with what the run did and the deliveries to make. A cancellation it makes
    reaches running workers from the store (their directory reloads it)."""
    dunning = DunningLedger(connection)
    report = take_steps(Sources.over(connection), PaymentLedger(connection), dunning,
                        datetime.now(UTC).date())  # fmt: skip
    deliveries = [Outgoing(f"{d.tenant}|{d.invoice_id}|{d.step}", d.url, d.headers,
                           d.body.decode()) for d in pending(dunning, None, report)]  # fmt: skip
    summary = {"taken": len(report.taken), "deliveries": deliveries,
               "undelivered": report.undelivered, "problems": report.problems,
               "cancelled": [f"{r.tenant}/{r.subscription}" for r in report.cancelled]}  # fmt: skip
    return Answer(200, "application/json", msgspec.json.encode(summary))


def answer_delivered(
    connection: Connection, book: PriceBook, settings: Settings, body: bytes
) -> Answer:
    """Record what the gateway delivered; an attempt that failed is retried next run."""
    results = []
    for outcome in _outcomes.decode(body).outcomes:
        tenant, invoice_id, step = outcome.key.rsplit("|", 2)
        results.append(Delivered(tenant, invoice_id, int(step), 200 <= outcome.status < 300,
                                 outcome.why))  # fmt: skip
    report = DunningReport()
    record_deliveries(DunningLedger(connection), results, report)
    summary = {"delivered": report.delivered, "undelivered": report.undelivered}
    return Answer(200, "application/json", msgspec.json.encode(summary))
