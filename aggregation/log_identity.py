"""Which log a stored position came from: the rule that tells a new log from a replay.

A Kafka offset means something only inside one log. The embedded broker forgets its
topics when it stops, a topic can be deleted and created again, and a move to another
cluster starts every partition at other offsets. Each time, offsets start over, and
an event at offset 5 of the new log would look like a replay of the event at offset 5
of the old one, so it would never be billed.

So a partition's log has an *epoch*: 0 for the first log meterline saw there, one more
for each log after it. Every position the worker keeps or stores is ordered first by
epoch, then by offset (``ordinal``): any event of a newer log comes after every event
of an older one, so the replay rule in ``aggregation.state`` never takes it for a
replay, while a true duplicate (the same event id, resent) is still caught by its
dedupe mark whichever log carried it first.

How a new log is recognised: after each batch the store keeps, per partition, a
checkpoint with the offset and a fingerprint of the last record it made durable. The
same log still holds that record at that offset (or, on a cluster with retention, has
already deleted it and starts later). A log that ends before that offset, or holds
another record there, is a new one. Nothing else is taken as proof: when the broker
does not answer, the worker does not guess (a wrong "new log" would bill replays twice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

EPOCH_SHIFT = 64  # Kafka offsets are signed 64-bit: the epoch sits above every offset
OFFSET_MASK = (1 << EPOCH_SHIFT) - 1


def ordinal(epoch: int, offset: int) -> int:
    """A position's place across logs: epoch first, then the Kafka offset."""
    return (epoch << EPOCH_SHIFT) | offset


def split(position: int) -> tuple[int, int]:
    """(epoch, Kafka offset) of an ordinal."""
    return position >> EPOCH_SHIFT, position & OFFSET_MASK


def fingerprint(key: bytes | None, value: bytes | None, timestamp_ms: int) -> bytes:
    """16 bytes standing for one Kafka record: its key, value and produce time. Two logs
    hold the same record at the same offset only if the same producer wrote the same
    bytes in the same millisecond, so an equal fingerprint means the same log."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (key or b"", value or b""):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    digest.update(timestamp_ms.to_bytes(8, "little", signed=True))
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last record of a partition whose effects are durable, in the log of ``epoch``."""

    partition: int
    epoch: int
    offset: int
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Probe:
    """What the broker holds at a checkpoint's offset: the first record at or after it
    (its offset and fingerprint), or none, with the partition's end as last fetched."""

    offset: int | None
    fingerprint: bytes | None
    highwater: int | None


class Judgement(Enum):
    SAME_LOG = "same_log"
    NEW_LOG = "new_log"
    UNKNOWN = "unknown"  # the broker has not answered enough to tell: ask again


def judge(checkpoint: Checkpoint, probe: Probe) -> tuple[Judgement, str]:
    """Is the partition's log still the one the checkpoint was taken in? With the reason."""
    if probe.offset is not None:
        if probe.offset > checkpoint.offset:
            return Judgement.SAME_LOG, (
                f"offset {checkpoint.offset} is gone and the log starts at {probe.offset}: "
                "retention deleted it"
            )
        if probe.fingerprint == checkpoint.fingerprint:
            return Judgement.SAME_LOG, f"offset {checkpoint.offset} holds the same record"
        return Judgement.NEW_LOG, (
            f"offset {checkpoint.offset} holds another record than the one made durable"
        )
    if probe.highwater is not None and probe.highwater <= checkpoint.offset:
        return Judgement.NEW_LOG, (
            f"the log ends at offset {probe.highwater}, before offset {checkpoint.offset} "
            "that was already made durable: offsets went backwards"
        )
    return Judgement.UNKNOWN, "the broker returned neither the record nor the log's end"
