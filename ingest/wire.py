"""What product services send over HTTP: CloudEvents 1.0 in JSON (structured mode, one
event or a batch) and meterline's plain JSON event (one object or an array of them).

Both speak the meter's units ("1.5" GB-hours); the gateway turns the quantity into the
meter's integer scale, exactly. A body is split into its items before any item is typed,
so one bad event in a batch is named on its own and the others still count.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

import msgspec

from base.events import Property, Timestamp
from base.problems import ProblemDocument

MAX_IDENTIFIER = 256
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IDENTIFIER)]


class CloudEvent(msgspec.Struct):
    """A CloudEvents 1.0 event. Attributes meterline does not read (extensions) are allowed
    and ignored; ``tenant`` is meterline's one extension, checked against the API key."""

    specversion: str
    id: Identifier
    source: Identifier
    type: Identifier
    subject: Identifier | None = None
    time: Timestamp | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: dict[str, Any] | None = None
    tenant: str | None = None


class PlainEvent(msgspec.Struct, forbid_unknown_fields=True):
    """meterline's own event: the meter named directly, the quantity in its units."""

    id: Identifier
    subscription: Identifier
    meter: Identifier
    quantity: Decimal
    timestamp: Timestamp | None = None
    source: Identifier = "default"
    properties: dict[str, Property] = msgspec.field(default_factory=dict)
    tenant: str | None = None


class Refusal(msgspec.Struct, frozen=True):
    """An event the gateway did not accept: its place in the batch, its id when it has
    one, a machine-readable reason and an explanation for people."""

    index: int
    id: str | None
    reason: str
    detail: str


class Accepted(msgspec.Struct):
    """The answer to a request: how many of its events were accepted, and each refused
    one. Accepted events are acknowledged by Kafka."""

    accepted: int
    rejected: list[Refusal]


class PartlyRefused(ProblemDocument):
    """A problem document for a request whose events were not all accepted, where a
    dialect's clients expect an error status rather than meterline's 202 with the refused
    events named: the accepted ones are billed; resending all is safe (dedupe)."""

    accepted: int = 0
    rejected: list[Refusal] = msgspec.field(default_factory=list)


class Format(Enum):
    CLOUD_EVENT = "application/cloudevents+json"
    CLOUD_EVENTS_BATCH = "application/cloudevents-batch+json"
    PLAIN = "application/json"

    @classmethod
    def of(cls, content_type: str) -> Format | None:
        media = content_type.split(";", 1)[0].strip().lower()
        return next((member for member in cls if member.value == media), None)

    @property
    def cloud(self) -> bool:
        return self is not Format.PLAIN


class BodyError(ValueError):
    """The body as a whole cannot be read (not JSON, or not the shape its type promises)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One event of a body, still as bytes, with its place in the batch."""

    index: int
    raw: bytes


# Untyped numbers in CloudEvents data keep their exact decimal literal.
_any_decoder = msgspec.json.Decoder(float_hook=Decimal)
_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_cloud_decoder = msgspec.json.Decoder(CloudEvent, float_hook=Decimal)
_plain_decoder = msgspec.json.Decoder(PlainEvent)


# The decoder recurses once per level of nesting, within Python's recursion limit (1,000
# frames, of which the server's own stack takes a few dozen): what is nested deeper than
# that is refused, never a crash. A meterline event needs three levels.
TOO_DEEP = "the JSON is nested too deeply to read (keep it under 500 levels)"


def split(body: bytes, form: Format) -> list[Item]:
    """The events of a body. A single-event format must hold one JSON object; a batch
    format, an array; plain JSON, either."""
    try:
        if body.lstrip()[:1] == b"[":
            if form is Format.CLOUD_EVENT:
                raise BodyError(f"{form.value} carries one event; send a batch as {_BATCH}")
            return [Item(i, bytes(raw)) for i, raw in enumerate(_items_decoder.decode(body))]
        if form is Format.CLOUD_EVENTS_BATCH:
            raise BodyError(f"{form.value} carries a JSON array of events")
        _any_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise BodyError(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise BodyError(TOO_DEEP) from None
    return [Item(0, body)]


_BATCH = Format.CLOUD_EVENTS_BATCH.value


def decode_cloud(raw: bytes) -> CloudEvent:
    return _cloud_decoder.decode(raw)


def decode_plain(raw: bytes) -> PlainEvent:
    return _plain_decoder.decode(raw)


def loose_id(raw: bytes) -> str | None:
    """The id of an item that failed to decode, when it has one, to name it in the answer."""
    try:
        value = _any_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    identifier = value.get("id") if isinstance(value, dict) else None
    return identifier if isinstance(identifier, str) else None
