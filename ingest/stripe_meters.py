"""Stripe's meter events, so that Stripe's SDKs need only a new base URL: ``POST
/v1/billing/meter_events``, form-encoded. A meter event becomes the CloudEvent it stands
for and goes through meterline's one admission path:

| Stripe | CloudEvent |
| --- | --- |
| ``identifier`` (else the ``Idempotency-Key`` header) | ``id`` (with ``source`` "stripe") |
| ``event_name`` | ``type`` (the meters that read it) |
| ``payload[stripe_customer_id]`` | ``subject``: the customer's one active subscription |
| ``payload[subscription]`` (meterline's addition) | ``subject``, when the customer has several |
| ``timestamp`` (Unix seconds; now when absent) | ``time`` |
| the rest of ``payload`` (``value`` among it) | ``data`` |

Stripe names the customer, meterline bills subscriptions: the customer (by meterline id,
or by external id, where a Stripe ``cus_...`` id is kept) must have exactly one
subscription active at the event's time, or the event must name one of theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from ingest.wire import MAX_IDENTIFIER, Item
from subscriptions.api import SubscriptionView

SOURCE = "stripe"
CUSTOMER_KEY = "stripe_customer_id"
SUBSCRIPTION_KEY = "subscription"

_encoder = msgspec.json.Encoder()


class StripeRefusalError(ValueError):
    """A meter event that cannot be accepted: Stripe's error code and message."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class MeterEvent(msgspec.Struct):
    event_name: str
    payload: dict[str, str]
    identifier: str
    timestamp: int | None  # Unix seconds, as sent
    customer: str


def parse(body: bytes, idempotency_key: str | None, generated: str) -> MeterEvent:
    """The form Stripe's SDKs send (``payload[value]=3`` and the like). ``generated`` is the
    identifier when neither ``identifier`` nor an idempotency key is given (Stripe makes
    one up too; such an event cannot be deduplicated)."""
    try:
        fields = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise StripeRefusalError("parameter_invalid", "the body is not form-encoded") from None
    flat: dict[str, str] = {}
    payload: dict[str, str] = {}
    for name, value in fields:
        if name.startswith("payload[") and name.endswith("]"):
            payload[name[len("payload[") : -1]] = value
        else:
            flat[name] = value
    event_name = flat.get("event_name", "")
    if not event_name:
        raise StripeRefusalError("parameter_missing", "event_name is required", "event_name")
    customer = payload.pop(CUSTOMER_KEY, "")
    if not customer:
        raise StripeRefusalError(
            "parameter_missing", f"payload[{CUSTOMER_KEY}] is required", f"payload[{CUSTOMER_KEY}]"
        )
    identifier = flat.get("identifier") or idempotency_key or generated
    if len(identifier) > MAX_IDENTIFIER:
        raise StripeRefusalError(
            "parameter_invalid", f"identifier has at most {MAX_IDENTIFIER} characters",
            "identifier",
        )  # fmt: skip
    stated = flat.get("timestamp")
    if stated is not None and not stated.lstrip("-").isdigit():
        raise StripeRefusalError("parameter_invalid", "timestamp must be Unix seconds", "timestamp")
    timestamp = int(stated) if stated is not None else None
    return MeterEvent(event_name, payload, identifier, timestamp, customer)


def subscription_for(
    event: MeterEvent, subscriptions: Sequence[SubscriptionView], now: datetime
) -> str:
    """The subscription the event is billed to, among its customer's: the one named in
    the payload, or the only one active at the event's time."""
    named = event.payload.pop(SUBSCRIPTION_KEY, None)
    if not subscriptions:
        raise StripeRefusalError(
            "resource_missing", f"no customer {event.customer!r} with a subscription",
            f"payload[{CUSTOMER_KEY}]",
        )  # fmt: skip
    if named is not None:
        if named not in {s.subscription for s in subscriptions}:
            raise StripeRefusalError(
                "resource_missing",
                f"customer {event.customer!r} has no subscription {named!r}",
                f"payload[{SUBSCRIPTION_KEY}]",
            )
        return named
    moment = moment_of(event, now)
    active = [
        s.subscription
        for s in subscriptions
        if s.started_at <= moment and (s.ended_at is None or moment < s.ended_at)
    ]
    if len(active) != 1:
        which = "no subscription" if not active else f"{len(active)} subscriptions"
        raise StripeRefusalError(
            "subscription_ambiguous" if active else "resource_missing",
            f"customer {event.customer!r} has {which} active at {moment.isoformat()}: name "
            f"one as payload[{SUBSCRIPTION_KEY}]",
            f"payload[{SUBSCRIPTION_KEY}]",
        )  # fmt: skip
    return active[0]


def moment_of(event: MeterEvent, now: datetime) -> datetime:
    if event.timestamp is None:
        return now
    try:
        return datetime.fromtimestamp(event.timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise StripeRefusalError(
            "parameter_invalid", "timestamp must be Unix seconds", "timestamp"
        ) from None


def item(event: MeterEvent, subscription: str, now: datetime) -> Item:
    cloud = {"specversion": "1.0", "id": event.identifier, "source": SOURCE,
             "type": event.event_name, "subject": subscription,
             "time": moment_of(event, now), "data": event.payload}  # fmt: skip
    return Item(0, _encoder.encode(cloud))


def answer(event: MeterEvent, now: datetime) -> dict[str, Any]:
    """The accepted event as Stripe's API returns it."""
    payload = {CUSTOMER_KEY: event.customer, **event.payload}
    return {"object": "billing.meter_event", "created": int(now.timestamp()),
            "event_name": event.event_name, "identifier": event.identifier,
            "livemode": False, "payload": payload,
            "timestamp": int(moment_of(event, now).timestamp())}  # fmt: skip


def error(
    code: str, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    """Stripe's error body."""
    body: dict[str, Any] = {"type": kind, "code": code, "message": message}
    if param is not None:
        body["param"] = param
    return {"error": body}
