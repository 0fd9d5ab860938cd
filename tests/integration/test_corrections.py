"""Backfills and retractions of closed periods against the real ClickHouse engine: the
preview, the commit, its credit notes and adjustments, each amount checked against the
Decimal rating oracle over the corrected events; a backfill sent twice and a retraction
asked twice change nothing the second time; the events stay in the audit trail, marked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from click.testing import CliRunner

from aggregation.corrections import COMMITTED
from aggregation.handlers import CORRECTIONS
from base.events import UsageEvent
from base.settings import Settings
from ingest.store_access import DirectStore
from invoicing.closing import close_period
from invoicing.correcting import CorrectionError, Corrector
from invoicing.correction_api import answer_correction
from invoicing.explain import explain_line
from invoicing.invoice import FINALIZED, TRUE_UP, USAGE
from meterline.cli import main
from meterline.embedded_broker import EmbeddedBroker
from tests.integration.gateway_helpers import gateway_for
from tests.integration.test_invoices import (  # noqa: F401 (scenario: a fixture)
    AUG,
    BOOK,
    SEP,
    TENANT,
    at,
    invoices,
    scenario,
    seed_scenario,
    usage,
)
from tests.stores import Stores

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)  # August and September are closed to live events


def corrector(store: Stores) -> Corrector:
    return Corrector(store.sources, BOOK, timedelta(days=35), partitions=4, clock=lambda: NOW)


def event(identifier: str, subscription: str, meter: str, quantity: int, moment: datetime) -> (
    UsageEvent
):  # fmt: skip
    return UsageEvent(identifier, TENANT, subscription, meter, quantity, moment)


@pytest.mark.usefixtures("scenario")
def test_a_backfill_and_a_retraction_are_previewed_then_billed_by_credit_notes_and_adjustments(
    store: Stores,
) -> None:
    close_period(store.sources, BOOK, AUG, finalize=True, clock=lambda: NOW)
    august = invoices(store, AUG)
    fixing = corrector(store)

    # A missed batch for a, with a resend of an event already stored and one too recent.
    missed = [event("late-1", "a", "api_calls", 400, at(date(2026, 8, 28))),
              event("late-2", "a", "api_calls", 300, at(date(2026, 8, 31), 23)),
              event("e1", "a", "api_calls", 1500, at(date(2026, 8, 25))),
              event("late-3", "a", "api_calls", 5, at(date(2026, 11, 20)))]  # fmt: skip
    preview = fixing.backfill(TENANT, missed, by="ops@acme", reason="gateway outage 28-31 Aug")
    assert [e.id for e in preview.duplicates] == ["e1"]
    assert [(r.event.id, r.reason) for r in preview.refused] == [("late-3", "open_period")]
    (found,) = preview.effects
    assert (found.subscription, found.period, found.status) == ("a", AUG, FINALIZED)
    more = usage("growth", 1, "api_calls", 2200) - usage("growth", 1, "api_calls", 1500)
    assert [(c.difference.item, c.difference.amount, c.credited) for c in found.changes] == [
        ("api_calls", more, 0)
    ]
    assert found.adjust_on == SEP
    assert store.sources.corrections.journal(TENANT) == [], "a preview writes nothing"

    done = fixing.commit(preview)
    assert done.credit_notes == [] and done.drafts == [SEP]
    (entry,) = store.sources.corrections.journal(TENANT)
    assert entry.status == COMMITTED and entry.plan.by == "ops@acme"
    september = invoices(store, SEP)["a"]
    (adjustment,) = [line for line in september.lines if line.applies_to == AUG]
    assert (adjustment.amount, adjustment.quantity) == (more, 700)
    assert invoices(store, AUG) == august, "a finalized invoice never changes"
    again = fixing.backfill(TENANT, missed, by="ops@acme", reason="sent twice")
    assert again.empty and sorted(e.id for e in again.duplicates) == ["e1", "late-1", "late-2"]

    # A wrong batch for b (scale, EUR, a commitment of 40): its August usage goes away.
    wrong = fixing.retract(TENANT, by="finance@acme", reason="test traffic", subscription="b",
                           meter="api_calls", until=at(date(2026, 9, 1), 0))  # fmt: skip
    (found,) = wrong.effects
    b_usage = usage("scale", 1, "api_calls", 1000)
    changes = {c.difference.kind: c for c in found.changes}
    assert changes[USAGE].difference.amount == -b_usage and changes[USAGE].credited == b_usage
    # Less usage leaves more of the commitment to true up: billed on the next invoice.
    assert changes[TRUE_UP].difference.amount == b_usage and changes[TRUE_UP].adjusted == b_usage
    done = fixing.commit(wrong)
    (number,) = done.credit_notes
    (note,) = store.sources.credits.notes(TENANT, credit_note_id=number)
    assert note.invoice_id == august["b"].invoice_id and note.correction == wrong.plan.correction
    assert (note.subtotal, note.tax) == (
        b_usage,
        (b_usage * Decimal("0.20")).quantize(Decimal("0.01")),
    )
    assert note.lines[0].quantity == 1000
    b_september = invoices(store, SEP)["b"]
    assert [(x.kind, x.amount) for x in b_september.lines if x.applies_to == AUG] == [
        (TRUE_UP, b_usage)
    ], "the credit note's part is not billed again as an adjustment"

    # The events stay in the audit trail, marked; they are no longer billable.
    assert fixing.sources.corrections.find(TENANT, subscription="b", meter="api_calls") == []
    twice = fixing.retract(TENANT, by="x", reason="twice", ids=["e2"])
    assert twice.empty and twice.already == ["e2"]
    with pytest.raises(CorrectionError, match="no event of 'acme' that was billed: nope"):
        fixing.retract(TENANT, by="x", reason="unknown", ids=["e2", "nope"])
    explained = explain_line(store.sources, BOOK, b_september,
                             next(i for i, x in enumerate(b_september.lines, 1)
                                  if x.applies_to == AUG))  # fmt: skip
    assert any(wrong.plan.correction in fact for fact in explained.facts)
    close_period(store.sources, BOOK, SEP, clock=lambda: NOW)
    assert invoices(store, SEP)["b"] == b_september, "a later close bills nothing twice"


@pytest.mark.usefixtures("scenario")
def test_backfill_and_retract_work_from_a_shell_with_a_preview_first(
    store_environment: Stores, tmp_path: Path
) -> None:
    store = store_environment
    runner = CliRunner()
    final = runner.invoke(main, ["invoices", "finalize", "--period", "2026-08", "--yes"])
    assert final.exit_code == 0, final.output
    batch = tmp_path / "missed.ndjson"
    batch.write_text(
        '{"id": "m1", "subscription": "a", "meter": "api_calls", "quantity": 250, '
        '"timestamp": "2026-08-29T10:00:00Z"}\n'
        '{"id": "m2", "subscription": "a", "meter": "api_calls", "quantity": "not a number"}\n'
    )
    asked = ["events", "backfill", str(batch), "--tenant", TENANT, "--reason", "outage"]
    preview = runner.invoke(main, [*asked, "--json"])
    assert preview.exit_code == 0, preview.output
    shown = json.loads(preview.output[preview.output.index("{") :])
    assert shown["status"] == "preview" and shown["added"] == 1
    (invoice,) = shown["invoices"]
    more = usage("growth", 1, "api_calls", 1750) - usage("growth", 1, "api_calls", 1500)
    assert Decimal(invoice["adjusted"]) == more and invoice["billed_by"] == "adjustment on 2026-09"
    assert "m2" in preview.output, "an unreadable event is named, not dropped silently"
    assert store.sources.corrections.journal() == []

    committed = runner.invoke(main, [*asked, "--commit"])
    assert committed.exit_code == 0 and "drafts for 2026-09 recomputed" in committed.output, (
        committed.output
    )
    again = runner.invoke(main, [*asked, "--commit"])
    assert again.exit_code == 0 and "nothing to change" in again.output, again.output

    retracted = runner.invoke(main, ["events", "retract", "--tenant", TENANT, "--id", "e3",
                                     "--reason", "wrong model", "--by", "finance",
                                     "--commit"])  # fmt: skip
    assert retracted.exit_code == 0 and "credit note CN-" in retracted.output, retracted.output
    (note,) = store.sources.credits.notes(TENANT)
    assert note.subtotal == usage("starter", 1, "tokens", 300_000)
    explained = runner.invoke(main, ["credit-notes", "explain", note.credit_note_id])
    assert explained.exit_code == 0 and "retracted events of 2026-08" in explained.output
    assert "-300000 token of tokens" in explained.output.replace(",", ""), explained.output
    reconciled = runner.invoke(main, ["reconcile", "--tenant", TENANT, "--period", "2026-08",
                                      "--format", "json"])  # fmt: skip
    assert reconciled.exit_code == 0, reconciled.output
    (august,) = json.loads(reconciled.output[reconciled.output.index("[") :])
    assert (august["billed"], august["retracted"], august["backfilled"], august["billable"]) == (
        3, 1, 1, 3
    )  # fmt: skip
    assert august["credit_notes"] == 1 and august["credited"] == f"{note.total:.2f} USD"
    listed = runner.invoke(main, ["events", "corrections", "--tenant", TENANT])
    assert listed.exit_code == 0 and listed.output.count("committed") == 2, listed.output

    for bad, message in (
        (["events", "retract", "--tenant", TENANT, "--id", "nope", "--reason", "x"],
         "that was billed: nope"),
        (["events", "retract", "--tenant", TENANT, "--reason", "x"], "name the events"),
        (["events", "retract", "--tenant", TENANT, "--id", "e1", "--reason", " "],
         "give a reason"),
    ):  # fmt: skip
        refused = runner.invoke(main, bad)
        assert refused.exit_code == 1 and message in refused.output, refused.output
        assert "Traceback" not in refused.output


def test_corrections_are_previewed_and_committed_over_http_with_an_admin_key(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    gateway, ingest_key = gateway_for(broker, settings_factory, tmp_path)
    admin, _ = gateway.keys.create(TENANT, "finance", scope="admin")
    other, _ = gateway.keys.create("globex", "finance", scope="admin")
    seeded = Stores.open(gateway.settings)
    try:
        seed_scenario(seeded)
        close_period(seeded.sources, BOOK, AUG, finalize=True, clock=lambda: NOW)
    finally:
        seeded.close()
    gateway.store = DirectStore(gateway.settings, BOOK, None, {CORRECTIONS: answer_correction})
    backfill = {"reason": "outage", "events": [
        {"id": "h1", "subscription": "a", "meter": "api_calls", "quantity": 100,
         "timestamp": "2026-08-29T08:00:00Z"},
        {"id": "h2", "subscription": "a", "meter": "nope", "quantity": 1,
         "timestamp": "2026-08-29T08:00:00Z"},
    ]}  # fmt: skip
    with asyncio.Runner() as runner:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.asgi()),
                                   base_url="http://gateway")  # fmt: skip

        def post(path: str, body: Any, key: str = admin) -> httpx.Response:
            return runner.run(client.post(path, content=msgspec.json.encode(body),
                                          headers={"authorization": f"Bearer {key}"}))  # fmt: skip

        try:
            assert post("/v1/corrections/backfill", backfill, ingest_key).status_code == 403
            assert post("/v1/corrections/backfill", backfill, "wrong").status_code == 401
            assert post("/v1/corrections/other", backfill).status_code == 404
            assert post("/v1/corrections/retract", {"reason": 1}).status_code == 400
            preview = post("/v1/corrections/backfill", backfill)
            assert preview.status_code == 200, preview.text
            shown = preview.json()
            assert (shown["status"], shown["added"], shown["by"]) == (
                "preview",
                1,
                "api key finance",
            )
            assert [u["reason"] for u in shown["unreadable"]] == ["unknown_meter"]
            more = usage("growth", 1, "api_calls", 1600) - usage("growth", 1, "api_calls", 1500)
            assert Decimal(shown["invoices"][0]["adjusted"]) == more
            done = post("/v1/corrections/backfill", {**backfill, "commit": True}).json()
            assert done["status"] == "committed" and done["drafts_closed"] == ["2026-09"]
            # Another tenant's key reaches nothing of acme's.
            assert post("/v1/corrections/retract", {"reason": "x", "ids": ["h1"]},
                        other).status_code == 422  # fmt: skip
            retracted = post(
                "/v1/corrections/retract", {"reason": "wrong", "ids": ["h1"], "commit": True}
            ).json()
            assert retracted["status"] == "committed", retracted
            refused = post("/v1/corrections/retract", {"reason": "", "ids": ["e1"]})
            assert refused.status_code == 422 and "reason" in refused.json()["detail"]
        finally:
            runner.run(client.aclose())
            runner.run(gateway.store.close())
