"""Ask the broker what it holds at each checkpoint's offset (see ``aggregation.log_identity``).

A plain consumer outside any group reads one record per partition; it commits
nothing and does not disturb the worker's group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from aggregation.log_identity import Checkpoint, Judgement, Probe, fingerprint, judge

PROBE_SECONDS = 15.0


class ProbeError(RuntimeError):
    """The broker did not say what it holds at a checkpoint: whether the log is new is unknown."""


async def probe(
    bootstrap_servers: str, topic: str, checkpoints: Sequence[Checkpoint]
) -> dict[int, tuple[Judgement, str]]:
    """partition -> (judgement, reason) for each checkpoint; raises ``ProbeError`` when the
    broker leaves one undecided for ``PROBE_SECONDS``."""
    if not checkpoints:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="none",  # out of range must be reported, not silently reset
        max_poll_records=1,
        fetch_max_wait_ms=200,
    )
    await consumer.start()
    try:
        return await _judge_all(consumer, topic, {c.partition: c for c in checkpoints})
    finally:
        await consumer.stop()


async def _judge_all(
    consumer: AIOKafkaConsumer, topic: str, pending: dict[int, Checkpoint]
) -> dict[int, tuple[Judgement, str]]:
    answers: dict[int, tuple[Judgement, str]] = {}
    tps = {partition: TopicPartition(topic, partition) for partition in pending}
    consumer.assign(list(tps.values()))
    for partition, checkpoint in pending.items():
        consumer.seek(tps[partition], checkpoint.offset)
    deadline = time.monotonic() + PROBE_SECONDS
    while pending and time.monotonic() < deadline:
        found: dict[int, Probe] = {}
        try:
            batches = await consumer.getmany(*(tps[p] for p in pending), timeout_ms=500)
        except OffsetOutOfRangeError as error:
            for tp in error.args[0]:
                found[tp.partition] = await _out_of_range(consumer, tp, pending[tp.partition])
            batches = {}
        for tp, records in batches.items():
            if records:
                first = records[0]
                held = fingerprint(first.key, first.value, first.timestamp)
                found[tp.partition] = Probe(first.offset, held, consumer.highwater(tp))
        for partition in list(pending):
            seen = found.get(partition) or Probe(None, None, consumer.highwater(tps[partition]))
            verdict = judge(pending[partition], seen)
            if verdict[0] is not Judgement.UNKNOWN:
                answers[partition] = verdict
                del pending[partition]
                consumer.pause(tps[partition])
        if pending:
            await asyncio.sleep(0.1)
    if pending:
        raise ProbeError(
            f"the broker did not show partitions {sorted(pending)} of {topic!r} at their "
            f"checkpoints within {PROBE_SECONDS:.0f} s"
        )
    return answers


async def _out_of_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, checkpoint: Checkpoint
) -> Probe:
    """The checkpoint's offset is outside the log: before its start (retention) or past
    its end (a new log). The start offset decides; the end the broker reports is only
    used to say where the log ends (the embedded broker's end offsets can be low)."""
    start = (await consumer.beginning_offsets([tp]))[tp]
    if checkpoint.offset < start:
        return Probe(start, None, None)
    end = (await consumer.end_offsets([tp]))[tp]
    return Probe(None, None, min(end, checkpoint.offset))
