"""Prepaid credits over HTTP (``/v1/credits``), answered by whoever holds the store: the
tenant's grants with their balances and history, or a new grant."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from aggregation.handlers import Answer, GrantAsk, problem
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.credits import FREE, PAID, Grant, GrantError, checked_grant
from invoicing.grant_ledger import Application, GrantLedger, new_grant_id
from invoicing.sources import Sources
from rating.plans import PriceBook

_ask = msgspec.json.Decoder(GrantAsk)


def answer_credits(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """200 with the grants (listed), 201 with the grant made, 422 with why not."""
    asked = _ask.decode(body)
    kept = GrantLedger(connection)
    if not asked.amount:
        used = kept.applications(asked.tenant)
        grants = [_view(g, used.get(g.grant_id, [])) for g in kept.grants(asked.tenant)
                  if not asked.customer or g.customer == asked.customer]  # fmt: skip
        return Answer(200, "application/json", msgspec.json.encode({"grants": grants}))
    try:
        known = Sources.over(connection).subscriptions.customers(asked.tenant)
        if (asked.tenant, asked.customer) not in known:
            raise GrantError(f"no customer {asked.customer!r} for tenant {asked.tenant!r}")
        try:
            amount, price = Decimal(asked.amount), Decimal(asked.price or 0)
            start = date.fromisoformat(asked.effective_from) if asked.effective_from else (
                datetime.now(UTC).date())  # fmt: skip
            end = date.fromisoformat(asked.expires_on) if asked.expires_on else None
        except (InvalidOperation, ValueError):
            raise GrantError("amount and price are decimal strings, effective_from and "
                             "expires_on days (YYYY-MM-DD)") from None  # fmt: skip
        made = checked_grant(Grant(asked.tenant, new_grant_id(), asked.customer,
                                   asked.subscription, asked.currency, amount, asked.priority,
                                   start, end, PAID if asked.price else FREE, price,
                                   asked.reason.strip(), meter=asked.meter),
                             meter_scale(book, asked.meter))  # fmt: skip
    except GrantError as error:
        return problem(422, "Unprocessable Content", str(error))
    kept.write([made])
    return Answer(201, "application/json", msgspec.json.encode(_view(made, [])))


def meter_scale(book: PriceBook, meter: str) -> int | None:
    """The scale of a grant's meter; None for one the book does not have (or none)."""
    known = {m.id: m.scale for m in book.meters}
    return known.get(meter) if meter else None


def _view(grant: Grant, used: list[Application]) -> dict[str, Any]:
    taken = sum((a.taken for a in used), Decimal(0))
    return {
        "grant": grant.grant_id, "customer": grant.customer,
        "subscription": grant.subscription, "currency": grant.currency,
        "amount": str(grant.amount), "used": str(taken), "balance": str(grant.amount - taken),
        "meter": grant.meter,
        "priority": grant.priority, "effective_from": grant.effective_from.isoformat(),
        "expires_on": grant.expires_on.isoformat() if grant.expires_on else None,
        "kind": grant.kind, "price": str(grant.price), "reason": grant.reason,
        "history": [{"invoice": a.invoice_id, "period": f"{a.period:%Y-%m}",
                     "subscription": a.subscription, "status": a.status,
                     "amount": str(a.amount), "units": str(a.units)} for a in used],
    }  # fmt: skip
