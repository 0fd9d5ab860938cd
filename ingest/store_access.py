"""How the gateway reaches the store, to read current usage, to make subscription changes
and to correct closed periods. With a ClickHouse server, or chDB that no worker holds, it
uses the store itself; with chDB held by the worker beside it (the embedded default: one
process may own a chDB directory), it asks that worker, which answers from the same code."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime
from typing import Protocol
from urllib.parse import quote

import aiohttp
import msgspec

from aggregation.entitlements import Balances, EntitlementsAnswer
from aggregation.handlers import HANDLED, Answer, Handlers
from aggregation.live import LiveUsage
from aggregation.model import RatedRows
from aggregation.readers import PipelineReads
from aggregation.usage import CurrentUsage, read_usage
from base.clickhouse import Connection
from base.settings import Settings
from rating.period import Period
from rating.plans import PriceBook
from subscriptions.api import RegistryAnswer, RegistryRequest, answer
from subscriptions.feed import announce
from subscriptions.store import SubscriptionStore

log = logging.getLogger(__name__)

_usage_decoder = msgspec.json.Decoder(CurrentUsage)
_entitlements_decoder = msgspec.json.Decoder(EntitlementsAnswer)
_answer_decoder = msgspec.json.Decoder(RegistryAnswer)
_encoder = msgspec.json.Encoder()


class StoreUnavailableError(RuntimeError):
    """The store (or the worker that holds it) did not answer."""


# Subscriptions' meters over a hard limit: (tenant, subscription, meter) -> why.
Denied = dict[tuple[str, str, str], str]


class StoreAccess(Protocol):
    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage: ...

    async def entitlements(
        self, tenant: str, subscription: str, feature: str | None
    ) -> EntitlementsAnswer | None:
        """A subscription's features now (None: no such subscription)."""
        ...

    async def denied(self) -> Denied:
        """The meters the gateway refuses events of, when it is configured to."""
        ...

    async def registry(self, request: RegistryRequest) -> RegistryAnswer:
        """Answer a subscriptions request; a change is stored, then published to workers."""
        ...

    async def handle(self, name: str, request: bytes) -> Answer:
        """Answer a request by the handler ``name`` (``aggregation.handlers``)."""
        ...

    async def ping(self) -> str:
        """ "ok", or what is wrong (never raises)."""
        ...

    async def close(self) -> None: ...


class DirectStore:
    def __init__(
        self,
        settings: Settings,
        book: PriceBook,
        bootstrap_servers: str | None = None,
        handlers: Handlers | None = None,
    ) -> None:
        self._settings = settings
        self._book = book
        self._handlers = handlers or {}
        self._bootstrap_servers = bootstrap_servers  # where changes are published
        self._connection: Connection | None = None
        # One query at a time: a chDB session is not shared between threads.
        self._lock = asyncio.Lock()

    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._read, tenant, subscription, period)
            except Exception as error:
                raise StoreUnavailableError(f"the store did not answer: {error}") from None

    def _read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        return read_usage(PipelineReads(self._connected()), self._book, tenant, subscription,
                          period)  # fmt: skip

    async def entitlements(
        self, tenant: str, subscription: str, feature: str | None
    ) -> EntitlementsAnswer | None:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._entitled, tenant, subscription, feature)
            except Exception as error:
                raise StoreUnavailableError(f"the store did not answer: {error}") from None

    def _entitled(
        self, tenant: str, subscription: str, feature: str | None
    ) -> EntitlementsAnswer | None:
        """From the stored totals (with a ClickHouse server no worker is asked): as current
        as the last durable batch, as the worker's live usage is."""
        connection = self._connected()
        found = SubscriptionStore(connection).subscription(tenant, subscription)
        if found is None:
            return None
        period = Period.of(datetime.now(UTC).date(), found.anchor_day).label
        live = LiveUsage()
        live.absorb(RatedRows.of(PipelineReads(connection).rated_totals(
            period, tenant=tenant, subscription=subscription
        )))  # fmt: skip
        terms = found.terms()
        return Balances(self._book, lambda owners: [terms] * len(owners), live).answer(
            (tenant, subscription), feature
        )

    async def denied(self) -> Denied:
        # Only a worker knows at once who passed a hard limit; the store is not polled.
        return {}

    async def registry(self, request: RegistryRequest) -> RegistryAnswer:
        now = datetime.now(UTC)
        skew = self._settings.max_clock_skew_seconds
        async with self._lock:
            try:
                answered, written = await asyncio.to_thread(
                    lambda: answer(
                        SubscriptionStore(self._connected()), self._book, skew, request, now
                    )
                )
            except Exception as error:
                raise StoreUnavailableError(f"the store did not answer: {error}") from None
        if written and self._bootstrap_servers:
            warning = await announce(self._bootstrap_servers, self._settings.subscriptions_topic,
                                     written)  # fmt: skip
            if warning:
                log.warning("%s", warning)
        return answered

    async def handle(self, name: str, request: bytes) -> Answer:
        answer = self._handlers.get(name)
        if answer is None:
            raise StoreUnavailableError(f"{name} requests are not answered by this gateway")
        async with self._lock:
            try:
                return await asyncio.to_thread(
                    lambda: answer(self._connected(), self._book, self._settings, request)
                )
            except Exception as error:
                raise StoreUnavailableError(f"the store did not answer: {error}") from None

    def _connected(self) -> Connection:
        # Migrated as a worker does: a store no worker has seen yet reads as empty.
        if self._connection is None:
            self._connection = Connection.open(self._settings)
        return self._connection

    async def ping(self) -> str:
        async with self._lock:
            try:
                await asyncio.to_thread(lambda: self._connected().ping())
            except Exception as error:
                log.debug("the store did not answer a health check: %s", error)
                return "error: the store did not answer"
        return "ok"

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


class NoStore:
    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        raise StoreUnavailableError(self._reason)

    async def entitlements(
        self, tenant: str, subscription: str, feature: str | None
    ) -> EntitlementsAnswer | None:
        raise StoreUnavailableError(self._reason)

    async def denied(self) -> Denied:
        return {}

    async def registry(self, request: RegistryRequest) -> RegistryAnswer:
        raise StoreUnavailableError(self._reason)

    async def handle(self, name: str, request: bytes) -> Answer:
        raise StoreUnavailableError(self._reason)

    async def ping(self) -> str:
        return "not read here"

    async def close(self) -> None:
        return None


class WorkerStore:
    """The worker that owns chDB, over its internal pages, which want ``secret``. Over
    aiohttp's client: an entitlement asked on every request of a product crosses this hop,
    and httpx spent 1.8 ms of CPU on each where aiohttp spends 0.3 (docs/performance.md)."""

    def __init__(self, worker_url: str, secret: str) -> None:
        self._base = worker_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {secret}"}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the loop that serves the gateway.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=10)
            )
        return self._session

    async def _call(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 10
    ) -> tuple[int, str, bytes, bool]:
        """(status, content type, body, whether a handler answered) of one request."""
        try:
            async with self._client().request(
                method, self._base + path, data=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:  # fmt: skip
                content = await response.read()
                media = response.headers.get("content-type", "application/octet-stream")
                return response.status, media, content, HANDLED in response.headers
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StoreUnavailableError(f"the worker did not answer: {error!r}") from None

    async def _ok(self, method: str, path: str, body: bytes | None = None) -> bytes:
        status, _, content, _ = await self._call(method, path, body)
        if status != 200:
            raise StoreUnavailableError(f"the worker answered {status}")
        return content

    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        path = f"/usage/{quote(tenant, safe='')}/{quote(subscription, safe='')}/{period:%Y-%m}"
        return _usage_decoder.decode(await self._ok("GET", path))

    async def entitlements(
        self, tenant: str, subscription: str, feature: str | None
    ) -> EntitlementsAnswer | None:
        """From the worker's live usage."""
        path = f"/entitlements/{quote(tenant, safe='')}/{quote(subscription, safe='')}"
        if feature is not None:
            path += f"/{quote(feature, safe='')}"
        status, _, content, _ = await self._call("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise StoreUnavailableError(f"the worker answered {status}")
        return _entitlements_decoder.decode(content)

    async def denied(self) -> Denied:
        listed = msgspec.json.decode(await self._ok("GET", "/denied"))["denied"]
        return {(tenant, subscription, meter): why for tenant, subscription, meter, why in listed}

    async def registry(self, request: RegistryRequest) -> RegistryAnswer:
        """The worker stores and publishes the change, and answers as the gateway would."""
        return _answer_decoder.decode(await self._ok("POST", "/registry", _encoder.encode(request)))

    async def handle(self, name: str, request: bytes) -> Answer:
        """The worker answers with the same handler (a correction's commit may take a
        while); a status it gives is the handler's when it says so in a header."""
        status, media, content, handled = await self._call("POST", f"/handle/{name}", request,
                                                           timeout=300)  # fmt: skip
        if not handled:
            raise StoreUnavailableError(f"the worker answered {status}")
        return Answer(status, media, content)

    async def ping(self) -> str:
        """The worker's own health: it owns the store."""
        try:
            status, _, content, _ = await self._call("GET", "/health")
        except StoreUnavailableError as error:
            log.debug("%s", error)
            return "error: the worker did not answer"
        if status != 200:
            log.debug("the worker is not healthy: %s", content[:500])
            return "error: the worker is not healthy"
        return "ok"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
