"""Where the gateway reads current usage from. With a ClickHouse server, or chDB that no
worker holds, it queries the store itself; with chDB held by the worker beside it (the
embedded default: one process may own a chDB directory), it asks that worker."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Protocol
from urllib.parse import quote

import httpx
import msgspec

from invoicing.store import Store
from invoicing.usage import CurrentUsage, read_usage
from meterline.settings import Settings
from rating.plans import PriceBook

_usage_decoder = msgspec.json.Decoder(CurrentUsage)


class StoreUnavailableError(RuntimeError):
    """The store (or the worker that holds it) did not answer."""


class StoreAccess(Protocol):
    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage: ...

    async def ping(self) -> str:
        """ "ok", or what is wrong (never raises)."""
        ...

    async def close(self) -> None: ...


class DirectStore:
    def __init__(self, settings: Settings, book: PriceBook) -> None:
        self._settings = settings
        self._book = book
        self._store: Store | None = None
        # One query at a time: a chDB session is not shared between threads.
        self._lock = asyncio.Lock()

    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._read, tenant, subscription, period)
            except Exception as error:
                raise StoreUnavailableError(f"the store did not answer: {error}") from None

    def _read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        return read_usage(self._connected(), self._book, tenant, subscription, period)

    def _connected(self) -> Store:
        if self._store is None:
            store = Store.connect(self._settings)
            store.migrate()  # as a worker does: a store no worker has seen yet reads as empty
            self._store = store
        return self._store

    async def ping(self) -> str:
        async with self._lock:
            try:
                await asyncio.to_thread(lambda: self._connected().ping())
            except Exception as error:
                return f"error: {error}"
        return "ok"

    async def close(self) -> None:
        if self._store is not None:
            self._store.close()


class NoStore:
    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        raise StoreUnavailableError(self._reason)

    async def ping(self) -> str:
        return "not read here"

    async def close(self) -> None:
        return None


class WorkerStore:
    def __init__(self, worker_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=worker_url, timeout=10)

    async def read(self, tenant: str, subscription: str, period: date) -> CurrentUsage:
        path = f"/usage/{quote(tenant, safe='')}/{quote(subscription, safe='')}/{period:%Y-%m}"
        try:
            response = await self._client.get(path)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise StoreUnavailableError(f"the worker did not answer: {error}") from None
        return _usage_decoder.decode(response.content)

    async def ping(self) -> str:
        """The worker's own health: it owns the store."""
        try:
            response = await self._client.get("/health")
        except httpx.HTTPError as error:
            return f"error: the worker did not answer: {error}"
        return "ok" if response.status_code == 200 else f"error: worker: {response.text[:200]}"

    async def close(self) -> None:
        await self._client.aclose()
