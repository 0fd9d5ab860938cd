"""The Python SDK: record usage with one call; the client buffers, batches, retries and
flushes on exit.

    with UsageClient("http://127.0.0.1:8787", api_key) as usage:
        usage.record("sub-42", "api_calls", 1)

Each event gets its id when it is recorded, and a retry resends the same ids, so a
batch sent twice (a timeout after the gateway stored it) still counts once. Events the
gateway refuses are handed to ``on_rejected`` (by default, logged); a batch that cannot
be delivered is retried with exponential backoff, honouring RetryableError-After, for up to
``give_up_after`` seconds before its events are handed to ``on_rejected`` as
"undelivered". ``AsyncUsageClient`` is the same for asyncio code; both have a Kafka mode
for services inside the cluster (``.kafka(...)``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypedDict, Unpack

import msgspec

from base.events import Property
from base.settings import Settings
from ingest.admission import Admission
from ingest.producer import Publisher
from ingest.transports import HttpTransport, KafkaTransport, RetryableError, Transport
from ingest.wire import PlainEvent, Refusal
from rating.plans import PriceBook

log = logging.getLogger("meterline.client")

Quantity = int | Decimal | str | float
OnRejected = Callable[[Refusal, bytes], None]


def _log_rejected(refusal: Refusal, event: bytes) -> None:
    log.warning("meterline refused event %s: %s (%s)", refusal.id, refusal.reason, refusal.detail)


class EventFields(TypedDict, total=False):
    """What an event may say beyond subscription, meter and quantity: its id (default: a
    new UUID), when the usage happened (default: now) and the properties meters group by."""

    event_id: str
    timestamp: datetime
    properties: Mapping[str, Property]


def encode_event(
    subscription: str, meter: str, quantity: Quantity, source: str, **fields: Unpack[EventFields]
) -> tuple[str, bytes]:
    """(id, the event as the gateway's plain JSON). A float is read as the decimal it
    prints as (0.1 is 0.1): pass a Decimal or a string to be explicit."""
    if isinstance(quantity, bool):
        raise TypeError("quantity must be a number, not a bool")
    exact = Decimal(repr(quantity)) if isinstance(quantity, float) else Decimal(quantity)
    event_id = fields.get("event_id") or uuid.uuid4().hex
    event = PlainEvent(
        id=event_id,
        subscription=subscription,
        meter=meter,
        quantity=exact,
        timestamp=fields.get("timestamp") or datetime.now(UTC),
        source=source,
        properties=dict(fields.get("properties") or {}),
    )
    return event_id, msgspec.json.encode(event)


class AsyncUsageClient:
    def __init__(
        self,
        transport: Transport,
        *,
        source: str = "default",
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_buffer: int = 100_000,
        give_up_after: float = 300.0,
        on_rejected: OnRejected = _log_rejected,
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.give_up_after = give_up_after
        self.on_rejected = on_rejected
        self.delivered = 0
        self._transport = transport
        self._pending: deque[bytes] = deque()
        self._sending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    def http(cls, url: str, api_key: str, **options: Any) -> AsyncUsageClient:
        return cls(HttpTransport(url, api_key), **options)

    @classmethod
    def kafka(
        cls, settings: Settings, bootstrap_servers: str, tenant: str, book: PriceBook,
        **options: Any,
    ) -> AsyncUsageClient:  # fmt: skip
        """Straight to the events topic, checked as the gateway checks; for services that
        run beside Kafka and are trusted with their tenant."""
        publisher = Publisher(
            bootstrap_servers, settings.events_topic, idempotent=settings.idempotent_producer
        )
        admission = Admission(book, settings.event_window())
        return cls(KafkaTransport(publisher, admission, tenant), **options)

    async def __aenter__(self) -> AsyncUsageClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        await self._transport.start()
        self._loop = asyncio.get_running_loop()
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._task = self._loop.create_task(self._run())

    async def record(
        self, subscription: str, meter: str, quantity: Quantity, **fields: Unpack[EventFields]
    ) -> str:
        """Queue one event and return its id; waits only while the buffer is full."""
        event_id = self.enqueue(subscription, meter, quantity, **fields)
        while self.full():
            await asyncio.sleep(0.005)
        return event_id

    def enqueue(
        self, subscription: str, meter: str, quantity: Quantity, **fields: Unpack[EventFields]
    ) -> str:
        """Queue one event, whatever the buffer holds, and return its id; safe from any
        thread."""
        if self._loop is None:
            raise RuntimeError("start the client first (async with, or await start())")
        event_id, event = encode_event(subscription, meter, quantity, self.source, **fields)
        self._pending.append(event)
        if len(self._pending) == self.batch_size:
            self._loop.call_soon_threadsafe(self._wake_up)
        return event_id

    def full(self) -> bool:
        return self.buffered() >= self.max_buffer

    def buffered(self) -> int:
        return len(self._pending) + self._sending

    async def flush(self) -> None:
        """Return once every event recorded so far is delivered or handed to on_rejected."""
        assert self._idle is not None and self._task is not None
        while self.buffered():
            self._wake_up()
            self._idle.clear()
            idle = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait([idle, self._task], return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            if self._task.done():
                self._task.result()  # the sender died: raise what killed it

    async def aclose(self) -> None:
        if self._task is None:
            return
        await self.flush()
        # A flag, not cancel(): wait_for swallows a cancellation that meets a set event.
        self._closing = True
        self._wake_up()
        await self._task
        self._task = None
        await self._transport.close()

    def _wake_up(self) -> None:
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            while self._pending:
                size = min(self.batch_size, len(self._pending))
                batch = [self._pending.popleft() for _ in range(size)]
                self._sending = len(batch)
                await self._deliver(batch)
                self._sending = 0
            self._idle.set()
            if self._closing:
                return

    async def _deliver(self, batch: list[bytes]) -> None:
        deadline = time.monotonic() + self.give_up_after
        attempt = 0
        while True:
            try:
                refused = await self._transport.deliver(batch)
                break
            except RetryableError as retry:
                attempt += 1
                pause = retry.after or random.uniform(0, min(30.0, 0.1 * 2**attempt))
                if time.monotonic() + pause > deadline:
                    refused = [
                        Refusal(i, None, "undelivered", str(retry)) for i in range(len(batch))
                    ]
                    break
                log.info("retrying %d events in %.1f s: %s", len(batch), pause, retry)
                await asyncio.sleep(pause)
        self.delivered += len(batch) - len(refused)
        for refusal in refused:
            self.on_rejected(refusal, batch[refusal.index])


class UsageClient:
    """The same client for code without asyncio: it runs an event loop on a thread of its
    own; ``record`` only queues, and the client is flushed at exit if not closed before."""

    def __init__(self, url: str, api_key: str, **options: Any) -> None:
        self._start(AsyncUsageClient.http(url, api_key, **options))

    @classmethod
    def kafka(
        cls, settings: Settings, bootstrap_servers: str, tenant: str, book: PriceBook,
        **options: Any,
    ) -> UsageClient:  # fmt: skip
        client = cls.__new__(cls)
        client._start(AsyncUsageClient.kafka(settings, bootstrap_servers, tenant, book, **options))
        return client

    def _start(self, inner: AsyncUsageClient) -> None:
        self._inner = inner
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meterline-usage-client", daemon=True
        )
        self._thread.start()
        self._call(inner.start())
        atexit.register(self.close)

    def __enter__(self) -> UsageClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def delivered(self) -> int:
        return self._inner.delivered

    def record(
        self, subscription: str, meter: str, quantity: Quantity, **fields: Unpack[EventFields]
    ) -> str:
        """Queue one event and return its id; blocks only while the buffer is full."""
        event_id = self._inner.enqueue(subscription, meter, quantity, **fields)
        while self._inner.full():
            time.sleep(0.005)
        return event_id

    def flush(self) -> None:
        self._call(self._inner.flush())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        atexit.unregister(self.close)
        self._call(self._inner.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
