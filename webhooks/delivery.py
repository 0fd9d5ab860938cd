"""Which deliveries are due, what each sends, and what became of it.

A delivery is one message to one endpoint. Its state is read from its attempts alone:
delivered once an attempt was answered 2xx; otherwise due again on the schedule
(``schedule``), until its attempts are spent. A replay, asked for by command, is
recorded among the attempts and starts the count again. Whoever sends (the gateway)
records each outcome after the attempt: killed between the two, it sends again with the
same id, so a delivery is made at least once and a receiver can drop what it has seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from aggregation.handlers import Outcome, Outgoing
from base.clickhouse import Connection
from webhooks import signing
from webhooks.messages import Message
from webhooks.outbox import derive
from webhooks.schedule import SPAN, delivered, next_attempt
from webhooks.store import ATTEMPT, REPLAY, Attempt, Endpoint, WebhookStore

# How far back deliveries are looked at: the retry span, and a day for a stopped sender.
HORIZON = SPAN + timedelta(days=1)


def state(attempts: Sequence[Attempt]) -> tuple[str, list[datetime]]:
    """("delivered" | "pending" | "failed", the failed attempts since the last replay)."""
    since = [a for a in attempts[_last_replay(attempts) :] if a.kind == ATTEMPT]
    if any(delivered(a.status) for a in since):
        return "delivered", []
    failed = [a.attempted_at for a in since]
    return ("pending" if next_attempt(failed) is not None else "failed"), failed


def _last_replay(attempts: Sequence[Attempt]) -> int:
    for i in range(len(attempts) - 1, -1, -1):
        if attempts[i].kind == REPLAY:
            return i + 1
    return 0


def deliveries(
    store: WebhookStore, found: Iterable[Message], endpoints: Sequence[Endpoint]
) -> list[tuple[Message, Endpoint, list[Attempt]]]:
    """Each delivery of ``found`` (every endpoint that takes each message), with its
    attempts in time order."""
    messages = list(found)
    tried = store.attempts(message_ids=[m.id for m in messages]) if messages else {}
    return [(message, endpoint, tried.get((message.id, endpoint.endpoint_id), []))
            for message in messages for endpoint in endpoints
            if endpoint.takes(message)]  # fmt: skip


def due(connection: Connection, now: datetime) -> list[tuple[Message, Endpoint]]:
    store = WebhookStore(connection)
    endpoints = store.endpoints()
    if not endpoints:
        return []
    since = now - HORIZON
    found = {(m.tenant, m.id): m for m in store.messages(since)}
    replayed = [m for m in store.replayed_since(since) if m not in found]
    for message in store.messages(since, ids=[m for _, m in replayed]) if replayed else ():
        found[message.tenant, message.id] = message
    ready = []
    for message, endpoint, attempts in deliveries(store, found.values(), endpoints):
        status, failed = state(attempts)
        when = next_attempt(failed)
        if status == "pending" and when is not None and when <= now:
            ready.append((message, endpoint))
    return ready


def outgoing(connection: Connection, now: datetime, low_percent: Decimal) -> list[Outgoing]:
    """The deliveries to make now, each signed for this attempt: messages are made from
    new facts first."""
    derive(connection, now, low_percent)
    stamp = int(now.timestamp())
    return [
        Outgoing(key(message, endpoint), endpoint.url,
                 signing.headers(endpoint.secret, message.id, stamp, message.body),
                 message.body.decode())
        for message, endpoint in due(connection, now)
    ]  # fmt: skip


def key(message: Message, endpoint: Endpoint) -> str:
    return "\x1f".join((message.tenant, message.id, endpoint.endpoint_id))


def record(connection: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    if outcomes:
        keys = [o.key.split("\x1f") for o in outcomes]
        WebhookStore(connection).record_attempts([
            Attempt(tenant, message, endpoint, now, ATTEMPT, o.status, o.why)
            for (tenant, message, endpoint), o in zip(keys, outcomes, strict=True)
        ])  # fmt: skip


def replay(
    connection: Connection, tenant: str, message_id: str, endpoint_id: str | None, now: datetime
) -> int:
    """Ask for a message to be delivered again (to one endpoint, or every one that takes
    it), whatever became of it: the number of deliveries that will be made."""
    store = WebhookStore(connection)
    found = store.messages(now - HORIZON, tenant=tenant, ids=[message_id])
    if not found:
        return 0
    targets = [e for e in store.endpoints(tenant)
               if e.takes(found[0]) and endpoint_id in (None, e.endpoint_id)]  # fmt: skip
    if targets:
        store.record_attempts([Attempt(tenant, message_id, e.endpoint_id, now, REPLAY, 0,
                                       "replay asked for") for e in targets])  # fmt: skip
    return len(targets)
