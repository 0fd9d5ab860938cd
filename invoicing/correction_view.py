"""A correction's proposal or outcome as JSON-ready data, the same for the command line and
HTTP: amounts are exact decimal strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from base.events import utc_day
from invoicing.correcting import Committed, Proposal
from invoicing.corrections import Effect
from invoicing.export import money
from invoicing.invoice import FINALIZED
from rating.money import trimmed


def proposal_view(proposal: Proposal, committed: Committed | None = None) -> dict[str, Any]:
    plan = proposal.plan
    if proposal.empty:
        status = "nothing to change"
    else:
        status = "committed" if committed is not None else "preview"
    view: dict[str, Any] = {
        "correction": plan.correction if not proposal.empty else None,
        "kind": plan.kind,
        "status": status,
        "tenant": plan.tenant,
        "by": plan.by,
        "reason": plan.reason,
        "added": len(plan.added),
        "retracted": len(plan.retracted),
        "duplicates": [e.id for e in proposal.duplicates],
        "already_retracted": proposal.already,
        "refused": [
            {
                "id": r.event.id,
                "subscription": r.event.subscription,
                "meter": r.event.meter,
                "day": utc_day(r.event.timestamp).isoformat(),
                "reason": r.reason,
                "detail": r.detail,
            }
            for r in proposal.refused
        ],
        "invoices": [effect_view(found) for found in proposal.effects],
    }
    if committed is not None:
        view["credit_notes"] = committed.credit_notes
        view["drafts_closed"] = [period.strftime("%Y-%m") for period in committed.drafts]
    return view


def effect_view(found: Effect) -> dict[str, Any]:
    """What a correction does to one invoice: each line's difference and how it is billed."""

    def m(value: Decimal) -> str:
        return money(value, found.currency)

    if found.status == FINALIZED:
        how = "credit note" if found.credited else ""
        if found.adjusted:
            how += (" and " if how else "") + f"adjustment on {found.adjust_on:%Y-%m}"
    else:
        how = "draft recomputed" if found.status else "billed when the period is closed"
    return {
        "invoice": found.invoice_id,
        "subscription": found.subscription,
        "period": found.period.strftime("%Y-%m"),
        "status": found.status or "not invoiced",
        "currency": found.currency,
        "billed_by": how or "nothing changes",
        "lines": [
            {
                "kind": c.difference.kind,
                "item": c.difference.item,
                "group": c.difference.group,
                "plan": c.difference.plan,
                "plan_version": c.difference.plan_version,
                "quantity": trimmed(c.difference.quantity),
                "amount": m(c.difference.amount),
                "credited": m(c.credited),
                "adjusted": m(c.adjusted),
            }
            for c in found.changes
        ],
        "difference": m(sum((c.difference.amount for c in found.changes), Decimal(0))),
        "credited": m(found.credited),
        "credit_tax": m(found.credit_tax),
        "adjusted": m(found.adjusted),
        "adjustment_tax": m(found.adjustment_tax()),
    }
