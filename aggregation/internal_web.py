"""The worker's web pages: ``/metrics`` and ``/health`` for anyone who can reach the port
(it binds to 127.0.0.1 by default), and, with chDB, the internal pages through which the
gateway reads current usage and makes subscription changes, because this process owns
the store (chDB lets one process open it). Those answer only a caller that shows this
run's internal secret: the gateway, which has checked the tenant's API key already."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import faust
import msgspec
from faust.web import View

from aggregation.entitlements import Balances
from aggregation.handlers import HANDLED, Handlers
from aggregation.readers import PipelineReads
from aggregation.usage import read_usage
from base.clickhouse import Connection
from base.metrics import exposition
from base.settings import Settings
from rating.plans import PriceBook
from subscriptions.api import RegistryRequest, answer
from subscriptions.directory import SubscriptionDirectory
from subscriptions.feed import announce
from subscriptions.store import SubscriptionStore

log = logging.getLogger("meterline.worker")

_registry_decoder = msgspec.json.Decoder(RegistryRequest)
_encoder = msgspec.json.Encoder()


def add_pages(
    app: faust.App,
    settings: Settings,
    bootstrap_servers: str,
    *,
    connection: Connection,
    directory: SubscriptionDirectory,
    book: PriceBook,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    handlers: Handlers | None = None,
    balances: Balances | None = None,
) -> None:
    """``health()`` is (healthy, what to show) of the stream side: partitions and lag;
    ``handlers``, what the commands hand down (``aggregation.handlers``); ``balances``,
    the live entitlements the gateway asks for."""

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = exposition()
        # aiohttp refuses a charset in content_type=, so the header is set as it is.
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        """200 when the store answers and partitions are assigned; the lag per partition."""
        try:
            connection.ping()
            store = "ok"
        except Exception as error:
            store = f"error: {error}"
        streaming, shown = health()
        healthy = store == "ok" and streaming
        body = {"status": "ok" if healthy else "degraded", "store": store, **shown}
        return web.json(body, status=200 if healthy else 503)

    secret = settings.internal_key()

    def from_gateway(request: Any) -> bool:
        """With no secret configured, no caller."""
        shown = request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(secret) and hmac.compare_digest(shown.encode(), secret.encode())

    def refused(web: Any) -> Any:
        return web.json({"title": "Unauthorized", "status": 401,
                         "detail": "an internal page of the worker: for its gateway only"},
                        status=401)  # fmt: skip

    if balances is not None:
        add_balance_pages(app, balances, from_gateway, refused)
    if settings.clickhouse_url is not None:
        return  # with a ClickHouse server the gateway reads and writes the store itself
    pipeline = PipelineReads(connection)
    subscriptions = SubscriptionStore(connection)

    # Reads are short queries and run between batches on the same loop.
    @app.page("/usage/{tenant}/{subscription}/{period}")
    async def usage(web: Any, request: Any, tenant: str, subscription: str, period: str) -> Any:
        if not from_gateway(request):
            return refused(web)
        day = date.fromisoformat(f"{period}-01")
        found = read_usage(pipeline, book, tenant, subscription, day)
        return web.json(msgspec.to_builtins(found))

    # Changes are stored here, taken into this worker's directory at once, and published
    # for the others.
    class Registry(View):
        async def post(self, request: Any) -> Any:
            if not from_gateway(request):
                return refused(self)
            asked = _registry_decoder.decode(await request.read())
            answered, written = answer(subscriptions, book, settings.max_clock_skew_seconds,
                                       asked, datetime.now(UTC))  # fmt: skip
            for row in written:
                directory.absorb(row.owner, row.terms())
            if written:
                warning = await announce(bootstrap_servers, settings.subscriptions_topic, written)
                if warning:
                    log.warning("%s", warning)
            return self.bytes(msgspec.json.encode(answered), content_type="application/json")

    app.page("/registry")(Registry)

    # What the commands handed down (a correction, a portal page): on the loop between
    # batches, like a registry change; a correction touches only closed periods, which
    # the stream no longer writes.
    class HandlerPage(View):
        async def post(self, request: Any, name: str) -> Any:
            if not from_gateway(request):
                return refused(self)
            handler = (handlers or {}).get(name)
            if handler is None:
                return self.json({"title": "Not Found", "status": 404,
                                  "detail": f"this worker does not answer {name} requests"},
                                 status=404)  # fmt: skip
            answered = handler(connection, book, settings, await request.read())
            # As a header: aiohttp refuses a charset ("text/html; charset=utf-8") in
            # content_type= (found by the portal's page through `meterline serve`).
            headers = {"Content-Type": answered.media_type, HANDLED: "1"}
            return self.bytes(answered.body, status=answered.status, headers=headers)

    app.page("/handle/{name}")(HandlerPage)


def add_balance_pages(
    app: faust.App,
    balances: Balances,
    from_gateway: Callable[[Any], bool],
    refused: Callable[[Any], Any],
) -> None:
    """Entitlements from the live usage (no query: a product asks on every request), and
    the subscriptions over a hard limit, which the gateway polls to refuse their events."""

    async def entitled(web: Any, request: Any, tenant: str, subscription: str,
                       feature: str | None) -> Any:  # fmt: skip
        if not from_gateway(request):
            return refused(web)
        answered = balances.answer((tenant, subscription), feature)
        if answered is None:
            missing = {"title": "Not Found", "status": 404,
                       "detail": f"no subscription {subscription!r}"}  # fmt: skip
            return web.json(missing, status=404)
        return web.bytes(_encoder.encode(answered), content_type="application/json")

    @app.page("/entitlements/{tenant}/{subscription}")
    async def every_feature(web: Any, request: Any, tenant: str, subscription: str) -> Any:
        return await entitled(web, request, tenant, subscription, None)

    @app.page("/entitlements/{tenant}/{subscription}/{feature}")
    async def one_feature(
        web: Any, request: Any, tenant: str, subscription: str, feature: str
    ) -> Any:
        return await entitled(web, request, tenant, subscription, feature)

    @app.page("/denied")
    async def denied(web: Any, request: Any) -> Any:
        if not from_gateway(request):
            return refused(web)
        listed = [[tenant, subscription, meter, why]
                  for (tenant, subscription), meters in balances.denied.items()
                  for meter, why in meters.items()]  # fmt: skip
        return web.bytes(_encoder.encode({"denied": listed}), content_type="application/json")
