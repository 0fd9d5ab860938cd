"""The webhook handlers the commands hand down (``aggregation.handlers``): a delivery run,
its outcomes, and an admin's requests about endpoints, attempts and replays."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from aggregation.handlers import Answer, Outcomes, WebhookAsk, problem
from base.clickhouse import Connection
from base.settings import Settings
from rating.plans import PriceBook
from webhooks import messages
from webhooks.delivery import HORIZON, deliveries, outgoing, record, replay, state
from webhooks.signing import new_secret
from webhooks.store import Endpoint, WebhookStore

_outcomes = msgspec.json.Decoder(Outcomes)
_ask = msgspec.json.Decoder(WebhookAsk)


def _json(status: int, body: Any) -> Answer:
    return Answer(status, "application/json", msgspec.json.encode(body))


def answer_run(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """200 with the deliveries due now, for the gateway to make and report."""
    due = outgoing(connection, datetime.now(UTC), settings.credits_low_percent)
    return _json(200, {"deliveries": due})


def answer_delivered(
    connection: Connection, book: PriceBook, settings: Settings, body: bytes
) -> Answer:
    found = _outcomes.decode(body).outcomes
    record(connection, found, datetime.now(UTC))
    return _json(200, {"recorded": len(found)})


def answer_endpoints(
    connection: Connection, book: PriceBook, settings: Settings, body: bytes
) -> Answer:
    """200 (201 for an endpoint made, with its secret: shown this once), 404 for what the
    tenant does not have, 422 with why a request cannot be done."""
    try:
        asked = _ask.decode(body)
    except msgspec.ValidationError as error:
        return problem(400, "Bad Request", f"not a webhooks request: {error}")
    store = WebhookStore(connection)
    now = datetime.now(UTC)
    if asked.action == "list":
        return _json(200, {"endpoints": [_view(e) for e in store.endpoints(asked.tenant)]})
    if asked.action == "add":
        why = _checked(asked)
        if why:
            return problem(422, "Unprocessable Content", why)
        made = Endpoint(asked.tenant, f"ep_{secrets.token_hex(8)}", asked.url, new_secret(),
                        tuple(sorted(set(asked.types))), now)  # fmt: skip
        store.write_endpoint(made)
        return _json(201, {**_view(made), "secret": made.secret})
    if asked.action == "remove":
        known = {e.endpoint_id: e for e in store.endpoints(asked.tenant)}
        if asked.endpoint not in known:
            return problem(404, "Not Found", f"no webhook endpoint {asked.endpoint!r}")
        gone = known[asked.endpoint]
        store.write_endpoint(Endpoint(gone.tenant, gone.endpoint_id, gone.url, gone.secret,
                                      gone.types, gone.created_at, removed=True))  # fmt: skip
        return _json(200, {"removed": asked.endpoint})
    if asked.action == "attempts":
        return _json(200, {"deliveries": _deliveries(store, asked, now)})
    if asked.action == "replay":
        count = replay(connection, asked.tenant, asked.message, asked.endpoint or None, now)
        if not count:
            return problem(404, "Not Found", f"no message {asked.message!r} of the last "
                            f"{HORIZON.days} days for an endpoint"
                            + (f" {asked.endpoint!r}" if asked.endpoint else ""))  # fmt: skip
        return _json(200, {"replayed": asked.message, "deliveries": count})
    actions = "list, add, remove, attempts or replay"
    return problem(400, "Bad Request", f"action is {actions}, not {asked.action!r}")


def _checked(asked: WebhookAsk) -> str | None:
    parts = urlsplit(asked.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url {asked.url!r} is not an http(s) address"
    unknown = sorted(set(asked.types) - set(messages.TYPES))
    if unknown:
        return (f"no event type {', '.join(unknown)}; the types are "
                f"{', '.join(messages.TYPES)}")  # fmt: skip
    return None


def _view(endpoint: Endpoint) -> dict[str, Any]:
    return {"endpoint": endpoint.endpoint_id, "url": endpoint.url,
            "types": list(endpoint.types) or list(messages.TYPES),
            "created_at": endpoint.created_at.isoformat()}  # fmt: skip


def _deliveries(store: WebhookStore, asked: WebhookAsk, now: datetime) -> list[dict[str, Any]]:
    """Each delivery of the tenant's recent messages (or of the one named): its state and
    every attempt."""
    found = (store.messages(now - HORIZON, asked.tenant, ids=[asked.message]) if asked.message
             else store.messages(now - HORIZON, asked.tenant))  # fmt: skip
    return [
        {"message": message.id, "type": message.type, "endpoint": endpoint.endpoint_id,
         "occurred_at": message.occurred_at.isoformat(), "state": state(attempts)[0],
         "attempts": [{"at": a.attempted_at.isoformat(), "kind": a.kind, "status": a.status,
                       "detail": a.detail} for a in attempts]}
        for message, endpoint, attempts in deliveries(store, found, store.endpoints(asked.tenant))
    ]  # fmt: skip
