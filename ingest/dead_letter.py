"""The dead-letter topic's record: an event that cannot be billed, why, and where it was.

Consumers of the topic (a person, a replay tool) get the machine-readable reason, a
detail for people, the event as it was sent, and its position in the events topic,
which also lets them drop the repeats that an at-least-once delivery may bring.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class DeadLetter(msgspec.Struct, frozen=True):
    reason: str
    detail: str
    event: str  # the event as it was sent (JSON), or the undecodable bytes as text
    topic: str
    partition: int
    offset: int
    index: int  # the event's place in its record
    rejected_at: datetime


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return _encoder.encode(letter)


def decode_dead_letter(payload: bytes) -> DeadLetter:
    return _decoder.decode(payload)
