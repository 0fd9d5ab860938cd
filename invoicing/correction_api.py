"""Corrections over HTTP, answered by whoever holds the store: the gateway itself with a
ClickHouse server, or the worker beside it with chDB. The gateway has checked the admin
key and the events already; this proposes the correction, commits it when asked, and
answers the same view as ``meterline events ... --json``."""

from __future__ import annotations

import msgspec

from aggregation.corrections import BACKFILL, CorrectionRequest
from aggregation.handlers import Answer, problem
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.correcting import CorrectionError, Corrector
from invoicing.correction_view import proposal_view
from rating.plans import PriceBook

_request = msgspec.json.Decoder(CorrectionRequest)


def answer_correction(
    connection: Connection, book: PriceBook, settings: Settings, body: bytes
) -> Answer:
    """200 with the preview or the outcome, 422 when the correction cannot be made as
    asked (the detail says why)."""
    asked = _request.decode(body)
    fixing = Corrector.of(connection, book, settings)
    fixing.finish_pending(asked.tenant)
    try:
        if asked.kind == BACKFILL:
            proposal = fixing.backfill(asked.tenant, asked.events, by=asked.by,
                                       reason=asked.reason)  # fmt: skip
        else:
            proposal = fixing.retract(asked.tenant, by=asked.by, reason=asked.reason,
                                      ids=asked.ids, subscription=asked.subscription,
                                      meter=asked.meter, since=asked.since,
                                      until=asked.until)  # fmt: skip
    except CorrectionError as error:
        return problem(422, "Unprocessable Content", str(error))
    done = fixing.commit(proposal) if asked.commit and not proposal.empty else None
    return Answer(200, "application/json", msgspec.json.encode(proposal_view(proposal, done)))
