"""Faust's Kafka transport, as the worker needs it: records handed over in batches, a short
fetch wait, and a way to read a partition again from its start when it holds a new log.

Batches. Faust hands each record to its agent's stream on its own: a task, a channel and
sensor calls per record, which topped out at about 7k records/s here whatever the batch
size asked of ``take_events``. Kafka clients in other languages send one event per record
by default, so that ceiling was meterline's for them. The consumer here keeps Faust's
group membership, assignment callbacks, flow control, fetching and commit machinery, and
replaces only the loop that drains what was fetched: it gathers records until a batch is
full (``BatchLimits``) or its time is up, and gives the whole batch to one handler. The
handler makes the batch durable and then commits it (``commit_durable``); nothing is
acknowledged through Faust's per-message acks, so Faust's own periodic commit finds
nothing of this topic to commit.

Fetch wait: Faust builds its consumer with ``fetch_max_wait_ms=1500`` and no setting to change it.
Apache Kafka answers a waiting fetch as soon as a record arrives, so there the figure
does not matter; the embedded broker does not, and answers at its own pace (a probe
here: 0.35 s median, 0.58 s worst, with 1,500 ms; 18 ms with 100 ms). A bound of
``FETCH_MAX_WAIT_MS`` keeps produce-to-queryable latency low on both, at the cost of
an idle worker asking the broker ten times a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiokafka
from faust.sensors.prometheus import PrometheusMonitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import Service

log = logging.getLogger("meterline.worker")

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts, which is after this point.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


@dataclass(frozen=True)
class BatchLimits:
    """A batch ends when it holds ``records`` records or ``payload_bytes`` bytes of them,
    or ``seconds`` after its first record: bytes bound a batch of 500-event records,
    records a batch of one-event records, time the latency at low load."""

    records: int
    payload_bytes: int
    seconds: float


BatchHandler = Callable[[list[Message]], Awaitable[None]]


class BatchingConsumer(faust_aiokafka.Consumer):
    # Set by the worker before the app starts; without one, Faust's own loop runs.
    batch_handler: BatchHandler | None = None
    batch_limits = BatchLimits(records=50_000, payload_bytes=16 << 20, seconds=0.1)

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetcher runs this for as long as the consumer runs."""
        handler = self.batch_handler
        if handler is None:
            await super()._drain_messages(fetcher)
            return
        stopping = cast(Service, self)._stopped.is_set
        fetcher_stopping = cast(Service, fetcher)._stopped.is_set
        try:
            while not (stopping() or fetcher_stopping()):
                batch = await self._gather(stopping)
                if batch and not self.should_stop:
                    await handler(batch)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            log.info("the broker stopped the consumer while shutting down")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise

    async def _gather(self, stopping: Callable[[], bool]) -> list[Message]:
        """One batch of fetched records, in the order fetched per partition."""
        limits = self.batch_limits
        batch: list[Message] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while not stopping():
            wait = 1.0 if deadline is None else deadline - loop.time()
            if wait <= 0:
                break
            async for _, message in self.getmany(timeout=wait):
                batch.append(message)
                size += len(message.value or b"")
            if deadline is None and batch:
                deadline = loop.time() + limits.seconds
            if len(batch) >= limits.records or size >= limits.payload_bytes:
                break
            if deadline is None:
                await asyncio.sleep(0)  # nothing yet: let the rest of the worker run
        return batch

    async def commit_durable(self, offsets: dict[TP, int]) -> None:
        """Commit the next offset to read of each partition once a batch is durable.
        Offsets of partitions taken away meanwhile are left out (the new owner's replay
        of them is absorbed by the replay rule, ``aggregation.state``)."""
        await self._commit(offsets)

    async def rewind(self, tp: TP, offset: int) -> None:
        """Read ``tp`` from ``offset`` as if it had just been assigned there. Faust keeps
        its own account of what it committed and acknowledges nothing below it, so that
        account is dropped first (what Faust itself drops when a partition is revoked);
        then the offset is committed, so a restart starts there too, and sought."""
        for books in (self._gap, self._acked, self._acked_index, self._read_offset,
                      self._committed_offset):  # fmt: skip
            books.pop(tp, None)
        await self._commit({tp: offset})
        await self.seek(tp, offset)


class WorkerTransport(faust_aiokafka.Transport):
    Consumer = BatchingConsumer


class WorkerMonitor(PrometheusMonitor):
    """Faust's Prometheus sensor, with the end offset of a partition set only when it
    changes: Faust reports it once per fetched record, and each report looked up its
    labelled gauge again (6 µs a record, most of a one-event record's cost in Faust)."""

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        if self.tp_end_offsets.get(tp) != offset:
            super().track_tp_end_offset(tp, offset)
