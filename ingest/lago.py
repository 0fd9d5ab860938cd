"""Lago's event API, so that Lago's clients need only a new base URL: ``POST
/api/v1/events`` with ``{"event": {...}}`` and ``POST /api/v1/events/batch`` with
``{"events": [...]}``. Each Lago event becomes the CloudEvent it stands for and goes
through meterline's one admission path:

| Lago | CloudEvent |
| --- | --- |
| ``transaction_id`` | ``id`` (with ``source`` "lago": Lago dedupes on it too) |
| ``code`` (the billable metric) | ``type`` (the meters that read it) |
| ``external_subscription_id`` | ``subject`` |
| ``timestamp`` (Unix seconds, a number or a string; now when absent) | ``time`` |
| ``properties`` (the metric's field among them) | ``data`` |

The answer echoes each event as Lago does; a refused one answers 422 with Lago's
``validation_errors`` shape, its reason as the error code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from ingest.wire import Identifier, Item, Refusal

SOURCE = "lago"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LagoEvent(msgspec.Struct):
    transaction_id: Identifier
    external_subscription_id: Identifier
    code: Identifier
    # Unix seconds: an integer, a decimal or a string of either (checked by _moment).
    timestamp: Any = None
    properties: dict[str, Any] | None = None
    precise_total_amount_cents: str | None = None
    external_customer_id: str | None = None  # older clients send it; the subscription decides


class _One(msgspec.Struct):
    event: msgspec.Raw


class _Many(msgspec.Struct):
    events: list[msgspec.Raw]


_one = msgspec.json.Decoder(_One)
_many = msgspec.json.Decoder(_Many)
# Decimals stay exact: a property may be the quantity.
_event = msgspec.json.Decoder(LagoEvent, float_hook=Decimal)
_encoder = msgspec.json.Encoder()


_top = msgspec.json.Decoder(dict[str, msgspec.Raw])


def is_lago(body: bytes) -> bool:
    """Whether a JSON body is Lago's ``{"event": ...}`` (and not a CloudEvent)."""
    try:
        return "event" in _top.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return False


class LagoBodyError(ValueError):
    """The body is not one of Lago's shapes."""


def events_of(body: bytes, *, batch: bool) -> list[bytes]:
    """The raw events of a body: ``{"event": ...}``, or ``{"events": [...]}`` for a batch."""
    try:
        if batch:
            return [bytes(raw) for raw in _many.decode(body).events]
        return [bytes(_one.decode(body).event)]
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        shape = '{"events": [...]}' if batch else '{"event": {...}}'
        raise LagoBodyError(f"send {shape} as Lago's API does: {error}") from None
    except RecursionError:
        raise LagoBodyError("the JSON is nested too deeply to read") from None


class Translated(msgspec.Struct):
    """A request's Lago events as CloudEvent items, the ones that are not Lago events at
    all refused already, and each event as decoded (None where refused here)."""

    items: list[Item]
    refused: list[Refusal]
    events: list[LagoEvent | None]


def translate(raw_events: list[bytes]) -> Translated:
    items: list[Item] = []
    refused: list[Refusal] = []
    events: list[LagoEvent | None] = []
    for index, raw in enumerate(raw_events):
        try:
            event = _event.decode(raw)
            time = _moment(event.timestamp)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            refused.append(Refusal(index, None, "invalid_event", str(error)))
            events.append(None)
            continue
        except _TimestampError as error:
            refused.append(Refusal(index, event.transaction_id, "invalid_timestamp", str(error)))
            events.append(None)
            continue
        cloud: dict[str, Any] = {"specversion": "1.0", "id": event.transaction_id, "source": SOURCE,
                                 "type": event.code,
                                 "subject": event.external_subscription_id,
                                 "data": event.properties or {}}  # fmt: skip
        if time is not None:  # else admission stamps it with the request's now
            cloud["time"] = time
        items.append(Item(index, _encoder.encode(cloud)))
        events.append(event)
    return Translated(items, refused, events)


class _TimestampError(ValueError):
    pass


def _moment(stated: object) -> datetime | None:
    """Lago's Unix seconds (an integer, a decimal or a string of either) as a moment."""
    if stated is None:
        return None
    if isinstance(stated, bool) or not isinstance(stated, int | str | Decimal):
        raise _TimestampError(f"timestamp {stated!r} is not Unix seconds")
    try:
        seconds = Decimal(stated)
    except InvalidOperation:
        raise _TimestampError(f"timestamp {stated!r} is not Unix seconds") from None
    if not seconds.is_finite() or not 0 <= seconds < 253_402_300_800:  # up to year 9999
        raise _TimestampError(f"timestamp {stated!r} is not Unix seconds")
    micros = int(seconds.scaleb(6).to_integral_value())
    return _EPOCH + timedelta(microseconds=micros)


def echo(event: LagoEvent, received: datetime) -> dict[str, Any]:
    """An accepted event as Lago's API answers it (its client reads these fields)."""
    moment = _moment(event.timestamp) or received
    return {
        "lago_id": None,
        "transaction_id": event.transaction_id,
        "lago_customer_id": None,
        "code": event.code,
        "timestamp": _iso(moment),
        "precise_total_amount_cents": event.precise_total_amount_cents,
        "properties": event.properties or {},
        "lago_subscription_id": None,
        "external_subscription_id": event.external_subscription_id,
        "created_at": _iso(received),
    }


def validation_errors(refused: list[Refusal], *, batch: bool) -> dict[str, Any]:
    """Lago's 422 body: each refused event's reason, by its place in a batch."""
    details: dict[str, Any] = {}
    for refusal in refused:
        entry = {"reason": refusal.reason, "detail": refusal.detail}
        if batch:
            details[str(refusal.index)] = entry
        else:
            details = entry
    return {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
            "error_details": details}  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
