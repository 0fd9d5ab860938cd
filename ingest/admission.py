"""The checks an event passes before it reaches Kafka, and its translation into the
pipeline's ``UsageEvent``. Pure: the price book, the clock and the limits come in; no I/O.

The worker checks again what only it can know (the subscription's plan, the partition);
what the gateway can tell from the event alone it answers at once, so the sender learns
of a mistake in the response instead of from the dead-letter topic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any, NamedTuple

import msgspec

from base.events import EventWindow, Property, UsageEvent
from ingest.wire import (
    TOO_DEEP,
    CloudEvent,
    Item,
    PlainEvent,
    Refusal,
    decode_cloud,
    decode_plain,
    loose_id,
)
from rating.money import INT64_MAX
from rating.plans import Meter, PriceBook


class OtherTenantError(Exception):
    """An event names a tenant other than the one its API key belongs to."""

    def __init__(self, index: int, named: str) -> None:
        super().__init__(f"event {index} names tenant {named!r}, which this key may not write")


@dataclass(slots=True)
class Admitted:
    events: list[UsageEvent] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


class _RefusedError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Instant(NamedTuple):
    """A request's now, and the oldest and newest timestamps accepted then."""

    now: datetime
    oldest: datetime
    newest: datetime


@dataclass(frozen=True)
class Limits:
    max_event_bytes: int = 64 * 1024


# Why a subscription's meter takes no more events now (over a hard limit), or None.
Capped = Callable[[str, str, str], str | None]
HARD_LIMIT = "hard_limit_reached"


class Admission:
    def __init__(
        self,
        book: PriceBook,
        window: EventWindow,
        limits: Limits = Limits(),
        capped: Capped | None = None,
    ) -> None:
        self._window = window
        self._limits = limits
        self.capped = capped
        self._meters = {meter.id: meter for meter in book.meters}
        by_type: dict[str, list[Meter]] = defaultdict(list)
        for meter in book.meters:
            by_type[meter.reads_type].append(meter)
        self._by_type = {kind: tuple(meters) for kind, meters in by_type.items()}

    def cloud_events(self, tenant: str, items: list[Item]) -> Admitted:
        """One usage event per meter that reads the CloudEvent's type."""
        return self._admit(tenant, items, self._from_cloud)

    def plain_events(self, tenant: str, items: list[Item]) -> Admitted:
        return self._admit(tenant, items, self._from_plain)

    def _admit(self, tenant: str, items: list[Item], translate: Any) -> Admitted:
        admitted = Admitted()
        # One clock reading per request: every event of it is judged against the same now.
        now = self._window.clock()
        at = _Instant(now, *self._window.bounds(now))
        for item in items:
            try:
                if len(item.raw) > self._limits.max_event_bytes:
                    raise _RefusedError(
                        "event_too_large",
                        f"{len(item.raw)} bytes; an event may have at most "
                        f"{self._limits.max_event_bytes}",
                    )
                events = translate(tenant, item, at)
                if self.capped is not None:
                    for event in events:
                        why = self.capped(tenant, event.subscription, event.meter)
                        if why is not None:
                            raise _RefusedError(HARD_LIMIT, why)
                admitted.events.extend(events)
            except _RefusedError as refusal:
                admitted.refused.append(
                    Refusal(item.index, loose_id(item.raw), refusal.reason, refusal.detail)
                )
        return admitted

    def _from_cloud(self, tenant: str, item: Item, at: _Instant) -> list[UsageEvent]:
        event: CloudEvent = _decoded(decode_cloud, item.raw)
        _check_tenant(item.index, event.tenant, tenant)
        if event.specversion != "1.0":
            raise _RefusedError(
                "unsupported_specversion", f"specversion {event.specversion!r}; meterline reads 1.0"
            )
        if event.subject is None:
            raise _RefusedError("missing_subject", "subject must name the subscription")
        meters = self._by_type.get(event.type)
        if meters is None:
            raise _RefusedError(
                "unknown_event_type", f"no meter reads events of type {event.type!r}"
            )
        timestamp = self._timestamp(event.time, at)
        data = event.data or {}
        return [
            UsageEvent(
                id=event.id,
                tenant=tenant,
                subscription=event.subject,
                meter=meter.id,
                quantity=_quantity(meter, data),
                timestamp=timestamp,
                source=event.source,
                properties=_group_properties(meter, data),
            )
            for meter in meters
        ]

    def _from_plain(self, tenant: str, item: Item, at: _Instant) -> list[UsageEvent]:
        event: PlainEvent = _decoded(decode_plain, item.raw)
        _check_tenant(item.index, event.tenant, tenant)
        meter = self._meters.get(event.meter)
        if meter is None:
            raise _RefusedError("unknown_meter", f"no meter {event.meter!r} in the price book")
        if meter.unique is not None and meter.unique not in event.properties:
            raise _missing_unique(meter)
        return [
            UsageEvent(
                id=event.id,
                tenant=tenant,
                subscription=event.subscription,
                meter=meter.id,
                quantity=_in_scale(meter, event.quantity),
                timestamp=self._timestamp(event.timestamp, at),
                source=event.source,
                properties=event.properties,
            )
        ]

    def _timestamp(self, stated: datetime | None, at: _Instant) -> datetime:
        if stated is None:
            return at.now
        if not at.oldest <= stated <= at.newest:
            problem = self._window.problem(stated, (at.oldest, at.newest))
            assert problem is not None
            raise _RefusedError(*problem)
        # Periods are UTC months: an offset must not move usage into the wrong one.
        return stated if stated.tzinfo is UTC else stated.astimezone(UTC)


def _decoded(decode: Any, raw: bytes) -> Any:
    try:
        return decode(raw)
    except msgspec.ValidationError as error:
        raise _RefusedError("invalid_event", str(error)) from None
    except msgspec.DecodeError as error:
        raise _RefusedError("invalid_json", str(error)) from None
    except RecursionError:
        raise _RefusedError("invalid_json", TOO_DEEP) from None


def _check_tenant(index: int, named: str | None, tenant: str) -> None:
    if named is not None and named != tenant:
        raise OtherTenantError(index, named)


def _quantity(meter: Meter, data: dict[str, Any]) -> int:
    if meter.aggregation in ("count", "unique_count"):
        return 1
    if meter.value not in data:
        raise _RefusedError(
            "missing_value", f"data.{meter.value} must hold the {meter.id} quantity"
        )
    value = data[meter.value]
    if type(value) is int:  # the common case, kept off the Decimal path (and not a bool)
        if value < 0:
            raise _RefusedError("negative_quantity", f"quantity {value} is negative")
        return _within_range(value * _POWERS[meter.scale], value)
    if not isinstance(value, Decimal | str):
        raise _RefusedError(
            "invalid_value", f"data.{meter.value} must be a number or a decimal string"
        )
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _RefusedError(
            "invalid_value", f"data.{meter.value} {value!r} is not a number"
        ) from None
    return _in_scale(meter, number)


_POWERS = [10**digits for digits in range(10)]
# Wide enough for any int64 quantity with nine decimals; a digit it would drop raises.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])


def _in_scale(meter: Meter, value: Decimal) -> int:
    if not value.is_finite():
        raise _RefusedError("invalid_value", f"quantity {value} is not a finite number")
    if value < 0:
        raise _RefusedError("negative_quantity", f"quantity {value} is negative")
    if value > INT64_MAX:
        raise _RefusedError("quantity_too_large", f"quantity {value} is too large to bill")
    try:
        units = value.scaleb(meter.scale, _EXACT)
    except Inexact:
        units = Decimal("0.5")  # more digits than any billable quantity: too precise
    whole = units.to_integral_value(context=_EXACT)
    if units != whole:
        raise _RefusedError(
            "too_precise", f"quantity {value} has more than the {meter.scale} decimal places "
            f"meter {meter.id!r} counts to"
        )  # fmt: skip
    return _within_range(int(whole), value)


def _within_range(units: int, stated: object) -> int:
    if units > INT64_MAX:
        raise _RefusedError("quantity_too_large", f"quantity {stated} is too large to bill")
    return units


def _missing_unique(meter: Meter) -> _RefusedError:
    return _RefusedError(
        "missing_property",
        f"meter {meter.id!r} counts distinct values of {meter.unique!r}, which is missing",
    )


def _group_properties(meter: Meter, data: dict[str, Any]) -> dict[str, Property]:
    """The properties the meter groups by or counts distinct values of; the rest of
    ``data`` is the sender's own."""
    if meter.unique is not None and data.get(meter.unique) is None:
        raise _missing_unique(meter)
    properties: dict[str, Property] = {}
    for name in (*meter.group_by, *((meter.unique,) if meter.unique else ())):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str | int | bool):
            raise _RefusedError(
                "invalid_property",
                f"data.{name} groups meter {meter.id!r}: it must be a string, integer or boolean",
            )
        properties[name] = value
    return properties
