"""What a webhook says: the kinds of event, and each message's id, type, time and body.
A message is made from a fact the store records (an invoice finalized, an alert's
crossing), and its id is a digest of that fact: made again from the same fact, it is the
same message, so the outbox can be derived again after any crash and nothing is sent
twice under two ids. Its body is kept when it is first made, so every attempt sends the
same bytes (docs/webhooks.md has the shapes)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import msgspec

ALERT_CROSSED = "alert.crossed"
INVOICE_DRAFTED = "invoice.drafted"
INVOICE_FINALIZED = "invoice.finalized"
INVOICE_CREDITED = "invoice.credited"
SUBSCRIPTION_CHANGED = "subscription.changed"
CREDITS_LOW = "credits.low"
CREDITS_EXPIRED = "credits.expired"
TYPES = (ALERT_CROSSED, INVOICE_DRAFTED, INVOICE_FINALIZED, INVOICE_CREDITED,
         SUBSCRIPTION_CHANGED, CREDITS_LOW, CREDITS_EXPIRED)  # fmt: skip


class Message(msgspec.Struct, frozen=True):
    tenant: str
    id: str  # "msg_" and a digest of the fact: the webhook-id every attempt carries
    type: str
    occurred_at: datetime
    body: bytes  # {"type": ..., "timestamp": ..., "data": {...}}


def message(tenant: str, kind: str, fact: str, occurred_at: datetime, data: Any) -> Message:
    """The message of one fact, named by ``fact`` (unique for the tenant and kind)."""
    digest = hashlib.sha256(f"{tenant}\x1f{kind}\x1f{fact}".encode()).hexdigest()[:32]
    body = msgspec.json.encode(
        {"type": kind, "timestamp": occurred_at.isoformat(), "tenant": tenant, "data": data}
    )
    return Message(tenant, f"msg_{digest}", kind, occurred_at, body)
