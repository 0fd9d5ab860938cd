"""The usage event shared by every stage, and its wire format (JSON).

Quantities are integers in the meter's declared scale, so no float ever
touches a billable number. The partition key groups one subscription's events
on one partition, which is what lets the aggregator reason about offsets.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class UsageEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    tenant: str
    subscription: str
    meter: str
    quantity: int
    timestamp: datetime
    source: str = "default"

    def partition_key(self) -> bytes:
        return f"{self.tenant}/{self.subscription}".encode()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageEvent)


def encode(event: UsageEvent) -> bytes:
    return _encoder.encode(event)


def decode(payload: bytes) -> UsageEvent:
    """Raise ``msgspec.ValidationError`` or ``msgspec.DecodeError`` for a malformed payload."""
    return _decoder.decode(payload)
