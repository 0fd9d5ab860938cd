"""Topic set-up and consumer-group progress.

Progress is measured from the group's committed offsets against the offsets
the producer was acknowledged, never from ``end_offsets()``: the embedded
broker answers ListOffsets("latest") wrongly (see DESIGN.md).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topic(
    bootstrap_servers: str, topic: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor=1, topic_configs=configs or {})]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def partition_count(bootstrap_servers: str, topic: str) -> int:
    """How many partitions the topic has, from the cluster's metadata."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        for _ in range(50):  # metadata for a topic just created can lag behind by a moment
            await consumer.topics()  # refreshes the cluster metadata
            found = consumer.partitions_for_topic(topic)
            if found:
                return len(found)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic!r} has no partitions in the cluster's metadata")
    finally:
        await consumer.stop()


class GroupProgress:
    """Reads how far a consumer group has committed, without joining the group."""

    def __init__(self, bootstrap_servers: str, group: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        self._topic = topic

    async def __aenter__(self) -> GroupProgress:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def committed(self, partitions: list[int]) -> dict[int, int]:
        """Next offset to consume per partition (0 when nothing is committed yet)."""
        result = {}
        for partition in partitions:
            offset = await self._consumer.committed(TopicPartition(self._topic, partition))
            result[partition] = offset or 0
        return result


async def log_ends(bootstrap_servers: str, topic: str, starts: dict[int, int]) -> dict[int, int]:
    """The end of each partition's log (the next offset to be written), as a fetch from
    ``starts`` reports it: the embedded broker's ListOffsets is wrong (see above)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        tps = {partition: TopicPartition(topic, partition) for partition in starts}
        consumer.assign(list(tps.values()))
        for partition, offset in starts.items():
            consumer.seek(tps[partition], offset)
        ends: dict[int, int] = {}
        for _ in range(50):
            await consumer.getmany(timeout_ms=100, max_records=1)
            ends = {p: end for p, tp in tps.items() if (end := consumer.highwater(tp)) is not None}
            if len(ends) == len(tps):
                return ends
        missing = sorted(set(tps) - set(ends))
        raise RuntimeError(f"the broker did not report where partitions {missing} end")
    finally:
        await consumer.stop()
