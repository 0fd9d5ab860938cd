"""What the worker sends on once a batch is durable: to the dead-letter topic, each event
that cannot be billed (why, and where it was); back to the events topic, each event that
reached another partition than its subscription's, on that partition.

Consumers of the topic (a person, a replay tool) get the machine-readable reason, a
detail for people, the event as it was sent, and its position in the events topic,
which also lets them drop the repeats that an at-least-once delivery may bring.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from aggregation.log_identity import split
from aggregation.model import Forwarded, Rejection
from base.events import encode

log = logging.getLogger("meterline.worker")

# Sends one value to the dead-letter topic; awaiting what it returns waits for the broker.
Send = Callable[[bytes], Awaitable[Awaitable[Any]]]


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


async def publish_dead_letters(
    send: Send, events_topic: str, rejected: Sequence[Rejection], exit_code: int
) -> None:
    """Send a batch's rejections to the dead-letter topic and wait for the broker (at
    least once, ``_deliver``)."""

    async def send_all() -> None:
        now = datetime.now(UTC)
        pending = []
        for rejection in rejected:
            letter = DeadLetter(
                reason=rejection.reason,
                detail=rejection.detail,
                event=rejection.payload.decode("utf-8", "replace"),
                topic=events_topic,
                partition=rejection.partition,
                offset=split(rejection.offset)[1],
                index=rejection.index,
                rejected_at=now,
            )
            pending.append(await send(encode_dead_letter(letter)))
        await asyncio.gather(*pending)

    await _deliver(send_all(), "publish dead letters", exit_code)


# Marks a record the worker forwarded, so that a copy that lands on the wrong partition
# again is refused rather than forwarded round in a loop.
FORWARDED_HEADER = "meterline-forwarded"


def is_forwarded_copy(headers: Any) -> bool:
    return any(name == FORWARDED_HEADER for name, _ in headers or ())


async def forward(producer: Any, events_topic: str, forwarded: Sequence[Forwarded],
                  exit_code: int) -> None:  # fmt: skip
    """Send each event on to its subscription's partition, keyed as meterline keys it, and
    wait for the broker (``_deliver``). A copy sent twice (a replay after a crash here) is
    a duplicate on arrival, whose dedupe mark is the same."""

    async def send_all() -> None:
        pending = [
            await producer.send(events_topic, item.event.partition_key(), encode(item.event),
                                item.home, None, [(FORWARDED_HEADER, b"1")])
            for item in forwarded
        ]  # fmt: skip
        await asyncio.gather(*pending)

    await _deliver(send_all(), "forward events to their partitions", exit_code)


async def _deliver(sends: Coroutine[Any, Any, None], what: str, exit_code: int) -> None:
    """Run a batch's sends to the broker to the end. A stop request must not cut them
    short (hence the shield); a failure ends the process before the batch is
    acknowledged, so it replays: what is sent here is sent at least once."""
    try:
        await asyncio.shield(sends)
    except Exception:
        log.critical("cannot %s: exiting without acknowledging the batch", what)
        os._exit(exit_code)
