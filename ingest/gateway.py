"""The HTTP ingest gateway: ``POST /v1/events`` takes one event or a batch, checks each,
and answers only once Kafka has acknowledged every event it accepted (acks=all).

An answer names each refused event with a machine-readable reason; the others are
accepted. Whole-request problems use RFC 9457 problem documents: 401 without a valid
key, 403 for another tenant's events, 413 beyond the size limits, 415 for an unknown
content type, 429 with Retry-After over the tenant's rate, 503 when Kafka did not
acknowledge (nothing is reported accepted; resend with the same ids, dedupe absorbs it).

It also reads current usage (``GET /v1/usage/{subscription}``) and, with an admin key,
manages the tenant's subscriptions (``/v1/subscriptions``: ``registry_api``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import httpx
import msgspec
from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregation.handlers import (
    ALERTS,
    CORRECTIONS,
    CREDITS,
    DELIVERED,
    PAYMENTS,
    PORTAL,
    PORTAL_LINK,
    WEBHOOK_ENDPOINTS,
    AlertAsk,
    GrantAsk,
    Outcome,
    Outcomes,
    Outgoing,
    PaymentReport,
    PortalLink,
    WebhookAsk,
)
from base import metrics
from base.metrics import exposition
from base.problems import ProblemDocument
from base.settings import Settings
from ingest import lago, stripe_meters
from ingest.admission import Admission, Admitted, Limits, OtherTenantError
from ingest.api_keys import ADMIN, INGEST, KeyFileError, KeyRecord, KeyRing
from ingest.binary_mode import is_binary, structured
from ingest.correction_wire import KINDS, any_age, correction_request
from ingest.openapi import document
from ingest.producer import Publisher
from ingest.rate_limit import RateLimiter
from ingest.store_access import Denied, DirectStore, StoreAccess, StoreUnavailableError
from ingest.wire import (
    MAX_IDENTIFIER,
    Accepted,
    BodyError,
    Format,
    Item,
    PartlyRefused,
    Refusal,
    split,
)
from rating.period import LAST_DAY
from rating.plans import PriceBook
from subscriptions.api import RegistryRequest, SubscriptionList

STORE_UNAVAILABLE = "the store did not answer; try again shortly"

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
DENIALS_POLL_SECONDS = 0.25
DELIVERY_TIMEOUT_SECONDS = 10.0
_subscription_list = msgspec.json.Decoder(SubscriptionList)


class RequestError(Exception):
    def __init__(self, status: int, title: str, detail: str, **headers: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers

    def response(self) -> Response:
        body = ProblemDocument(self.title, self.status, self.detail)
        return Response(
            _encoder.encode(body), self.status, self.headers, "application/problem+json"
        )


def _measured(
    route: str, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def measured(request: Request) -> Response:
        began = time.perf_counter()
        response = await handler(request)
        metrics.GATEWAY_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - began)
        metrics.GATEWAY_REQUESTS.labels(route, str(response.status_code)).inc()
        return response

    return measured


def _period(stated: str | None) -> date:
    if stated is None:
        return datetime.now(UTC).date().replace(day=1)
    try:
        month = datetime.strptime(stated, "%Y-%m").date()
    except ValueError:
        raise RequestError(
            400, "Bad Request", f"period {stated!r} is not a month like 2026-10"
        ) from None
    if not date(1970, 1, 1) <= month <= LAST_DAY:
        raise RequestError(400, "Bad Request",
                           f"period {stated} is outside 1970-01 to {LAST_DAY:%Y-%m}")  # fmt: skip
    return month


def _subscription_in_path(request: Request) -> str:
    """The subscription a path names ("" for none), held to the ids events may carry."""
    named: str = request.path_params.get("subscription", "")
    if len(named) > MAX_IDENTIFIER:
        raise RequestError(422, "Unprocessable Content",
                           f"a subscription id has at most {MAX_IDENTIFIER} characters; this "
                           f"one has {len(named)}")  # fmt: skip
    return named


def _limit(stated: str | None) -> int:
    if stated is None:
        return 100
    if not stated.isdigit() or not 1 <= int(stated) <= 10_000:
        raise RequestError(400, "Bad Request", f"limit {stated!r} is not a number from 1 to 10000")
    return int(stated)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        book: PriceBook,
        bootstrap_servers: str,
        keys: KeyRing,
        store: StoreAccess | None = None,
        *,
        periodic: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        # Handlers (``aggregation.handlers``) to ask every so many seconds while serving:
        # ``meterline serve`` asks for dunning runs.
        self.periodic = dict(periodic or {})
        self._tasks: list[asyncio.Task[None]] = []
        self.store = store or DirectStore(settings, book, bootstrap_servers)
        self.keys = keys
        limits = Limits(max_event_bytes=settings.max_event_bytes)
        # Meters over a hard limit, as the worker last said (polled while serving, when
        # the gateway is to refuse their events).
        self._denied: Denied = {}
        capped = self._capped if settings.refuse_over_hard_limit else None
        self.admission = Admission(book, settings.event_window(), limits, capped)
        self.backfill_admission = Admission(book, any_age(settings.event_window()), limits)
        self.limiter = RateLimiter(settings.tenant_events_per_second, settings.tenant_burst_events)
        self.publisher = Publisher(
            bootstrap_servers, settings.events_topic, idempotent=settings.idempotent_producer
        )
        self._openapi = _encoder.encode(document())

    async def __aenter__(self) -> Gateway:
        await self.publisher.__aenter__()
        self._tasks = [asyncio.create_task(self._every(name, seconds))
                       for name, seconds in self.periodic.items() if seconds > 0]  # fmt: skip
        if self.settings.refuse_over_hard_limit:
            self._tasks.append(asyncio.create_task(self._follow_denials()))
        return self

    def _capped(self, tenant: str, subscription: str, meter: str) -> str | None:
        return self._denied.get((tenant, subscription, meter))

    async def _follow_denials(self) -> None:
        """Ask which meters are over a hard limit, four times a second: a cap reached is
        refused within a second of the event that reached it, and lifted as quickly."""
        while True:
            try:
                self._denied = await self.store.denied()
            except StoreUnavailableError as error:
                log.debug("no denials read: %s", error)
            await asyncio.sleep(DENIALS_POLL_SECONDS)

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.__aexit__(*exc_info)
        await self.store.close()

    async def _every(self, name: str, seconds: float) -> None:
        """Ask the handler ``name`` now and then every ``seconds``, logging what it says; a
        store that does not answer is asked again next time. Outcomes it could not take
        (the worker restarting) are kept and reported first next time, so what was
        delivered is not delivered again; only a stop of the gateway itself loses them
        (and the deliveries are made again, with the same ids)."""
        unreported: list[Outcome] = []
        warned = False
        while True:
            try:
                if unreported:
                    await self.store.handle(name + DELIVERED,
                                            _encoder.encode(Outcomes(unreported)))  # fmt: skip
                    unreported = []
                answer = await self.store.handle(name, b"")
                said = msgspec.json.decode(answer.body) if answer.status == 200 else {}
                outgoing = msgspec.convert(said.pop("deliveries", []), list[Outgoing])
                if outgoing or any(said.values()):
                    log.info("%s run: %s", name, {**said, "deliveries": len(outgoing)})
                if outgoing:
                    # At once: one receiver that hangs does not hold up the others.
                    unreported = list(await asyncio.gather(*(deliver(d) for d in outgoing)))
                    await self.store.handle(name + DELIVERED,
                                            _encoder.encode(Outcomes(unreported)))  # fmt: skip
                    unreported = []
                warned = False
            except StoreUnavailableError as error:
                # Once per outage: a run every second would say it every second.
                if not warned:
                    log.warning("%s run: %s; trying again every %g s", name, error, seconds)
                warned = True
            await asyncio.sleep(seconds)

    def asgi(self, *, own_lifespan: bool = False) -> Starlette:
        """The ASGI app; with ``own_lifespan`` it starts and stops the producer itself."""

        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with self:
                yield

        return Starlette(
            routes=[
                Route("/v1/events", _measured("events", self.post_events), methods=["POST"]),
                # The peers' ingest endpoints, for their clients as they are (docs/migrate/).
                Route("/api/v1/events", _measured("events", self.api_v1_events), methods=["POST"]),
                Route(
                    "/api/v1/events/batch", _measured("events", self.lago_batch), methods=["POST"]
                ),
                Route(
                    "/v1/billing/meter_events",
                    _measured("events", self.stripe_meter_events),
                    methods=["POST"],
                ),
                Route(
                    "/v1/usage/{subscription}", _measured("usage", self.get_usage), methods=["GET"]
                ),
                Route(
                    "/v1/entitlements/{subscription}",
                    _measured("entitlements", self.get_entitlements),
                    methods=["GET"],
                ),
                Route(
                    "/v1/entitlements/{subscription}/{feature}",
                    _measured("entitlements", self.get_entitlements),
                    methods=["GET"],
                ),
                Route(
                    "/v1/subscriptions",
                    _measured("subscriptions", self.subscriptions),
                    methods=["GET", "POST"],
                ),
                Route(
                    "/v1/subscriptions/{subscription}",
                    _measured("subscriptions", self.subscriptions),
                    methods=["GET"],
                ),
                Route(
                    "/v1/subscriptions/{subscription}/{action}",
                    _measured("subscriptions", self.subscriptions),
                    methods=["POST"],
                ),
                Route(
                    "/v1/customers",
                    _measured("customers", self.customers),
                    methods=["GET", "POST"],
                ),
                Route(
                    "/v1/corrections/{kind}",
                    _measured("corrections", self.corrections),
                    methods=["POST"],
                ),
                Route(
                    "/v1/customers/{customer}/portal-link",
                    _measured("customers", self.portal_link),
                    methods=["POST"],
                ),
                Route("/v1/payments", _measured("payments", self.payments), methods=["POST"]),
                Route("/v1/credits", _measured("credits", self.credits), methods=["GET", "POST"]),
                Route("/v1/alerts", _measured("alerts", self.alerts), methods=["GET", "POST"]),
                Route("/v1/alerts/{rule}", _measured("alerts", self.alerts), methods=["DELETE"]),
                Route(
                    "/v1/webhooks", _measured("webhooks", self.webhooks), methods=["GET", "POST"]
                ),
                Route(
                    "/v1/webhooks/deliveries",
                    _measured("webhooks", self.webhooks),
                    methods=["GET"],
                ),
                Route(
                    "/v1/webhooks/replay", _measured("webhooks", self.webhooks), methods=["POST"]
                ),
                Route(
                    "/v1/webhooks/{endpoint}",
                    _measured("webhooks", self.webhooks),
                    methods=["DELETE"],
                ),
                Route(
                    "/v1/payments/failed", _measured("payments", self.payments), methods=["POST"]
                ),
                # A customer's own pages: the signed link in the path is their only key.
                Route("/portal/{rest:path}", _measured("portal", self.portal), methods=["GET"]),
                Route("/v1/health", self.health, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            lifespan=lifespan if own_lifespan else None,
            exception_handlers={404: _no_route, 405: _no_route},
        )

    async def metrics(self, _: Request) -> Response:
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    async def openapi(self, _: Request) -> Response:
        return Response(self._openapi, media_type="application/json")

    async def health(self, _: Request) -> Response:
        """Whether Kafka and the store answer: 200 when both do, 503 otherwise."""
        try:
            await self.publisher.ping()
            kafka = "ok"
        except Exception as error:
            log.debug("Kafka did not answer a health check: %r", error)
            kafka = "error: Kafka did not answer"
        store = await self.store.ping()
        healthy = kafka == "ok" and not store.startswith("error")
        body = {"status": "ok" if healthy else "degraded", "kafka": kafka, "store": store,
                "topic": self.publisher.topic}  # fmt: skip
        return _json(body, 200 if healthy else 503)

    async def get_usage(self, request: Request) -> Response:
        """The key's tenant's subscription: period-to-date quantity and amount per meter
        and group. Another tenant's usage cannot be named, so it cannot be read."""
        try:
            tenant = self._tenant(request)
            period = _period(request.query_params.get("period"))
            answer = await self.store.read(tenant, _subscription_in_path(request), period)
        except RequestError as problem:
            return problem.response()
        except StoreUnavailableError as error:
            return _store_unavailable(error)
        return _json(answer)

    async def get_entitlements(self, request: Request) -> Response:
        """What the key's tenant's subscription may use now: each feature (or the one in
        the path), with its usage, limit and balance when it is metered."""
        try:
            tenant = self._tenant(request)
            subscription = _subscription_in_path(request)
            feature = request.path_params.get("feature")
            answer = await self.store.entitlements(tenant, subscription, feature)
        except RequestError as problem:
            return problem.response()
        except StoreUnavailableError as error:
            return _store_unavailable(error)
        if answer is None:
            missing = f"no subscription {subscription!r} of tenant {tenant!r}"
            return RequestError(404, "Not Found", missing).response()
        return _json(answer)

    async def subscriptions(self, request: Request) -> Response:
        """The key's tenant's subscriptions: list, show, import, and change one."""
        subscription = request.path_params.get("subscription", "")
        reading = request.method == "GET"
        default = ("show" if subscription else "list") if reading else "import"
        return await self._registry(request, request.path_params.get("action", default))

    async def customers(self, request: Request) -> Response:
        """The key's tenant's customers: list and import."""
        action = "list-customers" if request.method == "GET" else "import-customers"
        return await self._registry(request, action)

    async def _registry(self, request: Request, action: str) -> Response:
        """A registry request, for an admin key only: a service that sends events cannot
        change what its tenant's customers are billed."""
        reading = request.method == "GET"
        try:
            subscription = _subscription_in_path(request)
            tenant = self._tenant(request, ADMIN)
            asked = RegistryRequest(
                tenant, action, subscription, b"" if reading else await self._body(request),
                _limit(request.query_params.get("limit")),
            )  # fmt: skip
            answer = await self.store.registry(asked)
        except RequestError as problem:
            return problem.response()
        except StoreUnavailableError as error:
            return _store_unavailable(error)
        if not reading and answer.status < 300:
            log.info("registry %s", asked.action,
                     extra={"tenant": tenant, "subscription": subscription})  # fmt: skip
        media = "application/json" if answer.status < 400 else "application/problem+json"
        return Response(bytes(answer.body), answer.status, media_type=media)

    async def corrections(self, request: Request) -> Response:
        """A backfill or a retraction of closed periods, for an admin key only: previewed,
        or committed when the body says ``"commit": true``."""
        kind = request.path_params["kind"]
        try:
            if kind not in KINDS:
                raise RequestError(404, "Not Found", f"no endpoint {request.url.path}; a "
                                   "correction is a backfill or a retract")  # fmt: skip
            record = self._key(request, ADMIN)
            body = await self._body(request)
            try:
                asked, unreadable = correction_request(record.tenant, kind, body,
                                                       self.backfill_admission,
                                                       f"api key {record.name}")  # fmt: skip
            except BodyError as error:
                raise RequestError(400, "Bad Request", str(error)) from None
            except OtherTenantError as error:
                raise RequestError(403, "Forbidden", str(error)) from None
            answer = await self.store.handle(CORRECTIONS, _encoder.encode(asked))
        except RequestError as problem:
            return problem.response()
        except StoreUnavailableError as error:
            return _store_unavailable(error)
        if answer.status != 200:
            return Response(answer.body, answer.status, media_type=answer.media_type)
        view = msgspec.json.decode(answer.body)
        view["unreadable"] = [msgspec.to_builtins(r) for r in unreadable]
        log.info("correction %s %s", kind, view["status"],
                 extra={"tenant": record.tenant, "correction": view["correction"]})  # fmt: skip
        return _json(view)

    async def portal_link(self, request: Request) -> Response:
        """A signed, expiring link to a customer's portal, for an admin key only; the body
        may say for how many days (``{"days": 7}``, the default)."""

        async def asked() -> bytes:
            tenant = self._tenant(request, ADMIN)
            body = await self._body(request)
            try:
                days = int(msgspec.json.decode(body).get("days", 7)) if body.strip() else 7
            except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
                raise RequestError(400, "Bad Request",
                                   'the body is {"days": N} or empty') from None  # fmt: skip
            return _encoder.encode(PortalLink(tenant, request.path_params["customer"], days))

        return await self._forward(PORTAL_LINK, asked)

    async def payments(self, request: Request) -> Response:
        """A payment received, or (``/v1/payments/failed``) an attempt that failed, as a
        payment provider reports it; for an admin key only."""

        async def asked() -> bytes:
            tenant = self._tenant(request, ADMIN)
            report = _decoded(await self._body(request), PaymentReport, "a payment")
            failed = request.url.path.endswith("/failed")
            return _encoder.encode(msgspec.structs.replace(report, tenant=tenant, failed=failed))

        return await self._forward(PAYMENTS, asked)

    async def credits(self, request: Request) -> Response:
        """The key's tenant's prepaid credits: GET lists them with balances and history
        (``?customer=``), POST grants one; for an admin key only."""

        async def asked() -> bytes:
            tenant = self._tenant(request, ADMIN)
            if request.method == "GET":
                grant = GrantAsk(customer=request.query_params.get("customer", ""))
            else:
                grant = _decoded(await self._body(request), GrantAsk, "a grant")
                if not grant.amount:
                    raise RequestError(422, "Unprocessable Content", "a grant has an amount")
            return _encoder.encode(msgspec.structs.replace(grant, tenant=tenant))

        return await self._forward(CREDITS, asked)

    async def alerts(self, request: Request) -> Response:
        """The key's tenant's alert rules: GET lists, POST adds one, DELETE removes one;
        for an admin key only."""

        async def asked() -> bytes:
            tenant = self._tenant(request, ADMIN)
            if request.method == "GET":
                rule = AlertAsk("list")
            elif request.method == "DELETE":
                rule = AlertAsk("remove", id=request.path_params["rule"])
            else:
                rule = _decoded(await self._body(request), AlertAsk, "an alert rule")
                rule = msgspec.structs.replace(rule, action="add")
            return _encoder.encode(msgspec.structs.replace(rule, tenant=tenant))

        return await self._forward(ALERTS, asked)

    async def webhooks(self, request: Request) -> Response:
        """The key's tenant's webhook endpoints (GET lists, POST adds one, DELETE removes
        one), their deliveries with every attempt (``?message=``), and a replay; for an
        admin key only."""

        async def asked() -> bytes:
            tenant = self._tenant(request, ADMIN)
            path = request.url.path
            if path.endswith("/deliveries"):
                ask = WebhookAsk("attempts", message=request.query_params.get("message", ""))
            elif path.endswith("/replay"):
                ask = _decoded(await self._body(request), WebhookAsk, "a replay")
                ask = msgspec.structs.replace(ask, action="replay")
            elif request.method == "DELETE":
                ask = WebhookAsk("remove", endpoint=request.path_params["endpoint"])
            elif request.method == "GET":
                ask = WebhookAsk("list")
            else:
                ask = _decoded(await self._body(request), WebhookAsk, "a webhook endpoint")
                ask = msgspec.structs.replace(ask, action="add")
            return _encoder.encode(msgspec.structs.replace(ask, tenant=tenant))

        return await self._forward(WEBHOOK_ENDPOINTS, asked)

    async def _forward(self, name: str, asked: Callable[[], Awaitable[bytes]]) -> Response:
        """Ask the store's holder the handler ``name`` (``aggregation.handlers``) with the
        request ``asked()`` makes (raising ``RequestError`` when it cannot), and answer
        what it answers."""
        try:
            answer = await self.store.handle(name, await asked())
        except RequestError as problem:
            return problem.response()
        except StoreUnavailableError as error:
            return _store_unavailable(error)
        return Response(answer.body, answer.status, media_type=answer.media_type)

    async def portal(self, request: Request) -> Response:
        """A page of a customer's portal (``portal.pages``): HTML, or a PDF."""
        try:
            answer = await self.store.handle(PORTAL, request.path_params["rest"].encode())
        except StoreUnavailableError as error:
            return _store_unavailable(error)
        headers = {"cache-control": "private, no-store", "referrer-policy": "no-referrer"}
        return Response(answer.body, answer.status, headers, media_type=answer.media_type)

    async def post_events(self, request: Request) -> Response:
        """meterline's own endpoint: CloudEvents (structured, batch or binary mode) or plain
        events; 202 with the refused ones named, 422 when none was accepted."""
        try:
            tenant = self._tenant(request)
            items, cloud = self._items(request, await self._body(request))
            count, admitted = await self._ingest(tenant, items, cloud=cloud)
        except RequestError as problem:
            return problem.response()
        answer = Accepted(count - len(admitted.refused), admitted.refused)
        status = 202 if answer.accepted else 422
        return _json(answer, status)

    async def api_v1_events(self, request: Request) -> Response:
        """``POST /api/v1/events``, where OpenMeter's clients send CloudEvents (as
        CloudEvents or as plain JSON) and Lago's send ``{"event": ...}``."""
        try:
            body = await self._body(request)
        except RequestError as problem:
            return problem.response()
        form = Format.of(request.headers.get("content-type", ""))
        if form is Format.PLAIN and not is_binary(request.headers) and lago.is_lago(body):
            return await self._lago(request, body, batch=False)
        return await self._openmeter(request, body)

    async def lago_batch(self, request: Request) -> Response:
        try:
            body = await self._body(request)
        except RequestError as problem:
            return problem.response()
        return await self._lago(request, body, batch=True)

    async def _openmeter(self, request: Request, body: bytes) -> Response:
        """OpenMeter's ingest: 204 once every event is accepted; otherwise 400 with the
        refused events named (the accepted ones are billed). Its clients send CloudEvents
        as application/json too."""
        try:
            tenant = self._tenant(request)
            items, _ = self._items(request, body)
            count, admitted = await self._ingest(tenant, items, cloud=True)
        except RequestError as problem:
            return problem.response()
        if not admitted.refused:
            return Response(status_code=204)
        refused = admitted.refused
        partly = PartlyRefused(
            "Bad Request", 400,
            f"{len(refused)} of {count} events refused ({refused[0].reason}: "
            f"{refused[0].detail}); the others are accepted",
            accepted=count - len(refused), rejected=refused,
        )  # fmt: skip
        return Response(_encoder.encode(partly), 400, media_type="application/problem+json")

    async def _lago(self, request: Request, body: bytes, *, batch: bool) -> Response:
        """Lago's event API: each event echoed as Lago's API does (200), or Lago's 422."""
        received = datetime.now(UTC)
        try:
            tenant = self._tenant(request)
            try:
                raw = lago.events_of(body, batch=batch)
            except lago.LagoBodyError as error:
                raise RequestError(400, "Bad Request", str(error)) from None
            translated = lago.translate(raw)
            _, admitted = await self._ingest(tenant, translated.items, cloud=True,
                                             refused=translated.refused)  # fmt: skip
        except RequestError as problem:
            return problem.response()
        if admitted.refused:
            answer = lago.validation_errors(admitted.refused, batch=batch)
            return _json(answer, 422)
        echoed = [lago.echo(event, received) for event in translated.events if event]
        answer = {"events": echoed} if batch else {"event": echoed[0]}
        return _json(answer)

    async def stripe_meter_events(self, request: Request) -> Response:
        """Stripe's ``POST /v1/billing/meter_events`` (``ingest.stripe_meters``): the event
        as Stripe returns it (200), or Stripe's error shape, whatever the error."""
        now = datetime.now(UTC)
        try:
            tenant = self._tenant(request)
            event = stripe_meters.parse(await self._body(request),
                                        request.headers.get("idempotency-key"),
                                        f"meterline_{uuid.uuid4().hex}")  # fmt: skip
            listed = await self.store.registry(
                RegistryRequest(tenant, "customer-subscriptions", limit=10_000,
                                customer=event.customer)
            )  # fmt: skip
            if listed.status >= 400:  # the store answered, but not with the list
                raise StoreUnavailableError(f"customer-subscriptions answered {listed.status}")
            views = _subscription_list.decode(listed.body).subscriptions
            subscription = stripe_meters.subscription_for(event, views, now)
            _, admitted = await self._ingest(
                tenant, [stripe_meters.item(event, subscription, now)], cloud=True
            )
        except RequestError as problem:
            kind = "api_error" if problem.status >= 500 else "invalid_request_error"
            body = stripe_meters.error(problem.title.lower().replace(" ", "_"), problem.detail,
                                       kind=kind)  # fmt: skip
            return _json(body, problem.status, problem.headers)
        except stripe_meters.StripeRefusalError as refused:
            body = stripe_meters.error(refused.code, refused.message, refused.param)
            return _json(body, 400)
        except StoreUnavailableError as error:
            log.warning("%s", error)
            body = stripe_meters.error("store_unavailable", STORE_UNAVAILABLE, kind="api_error")
            return _json(body, 503, {"Retry-After": "1"})
        if admitted.refused:
            first = admitted.refused[0]
            body = stripe_meters.error(first.reason, first.detail)
            return _json(body, 400)
        return _json(stripe_meters.answer(event, now))

    def _items(self, request: Request, body: bytes) -> tuple[list[Item], bool]:
        """The events of a request, still as bytes, and whether they are CloudEvents."""
        if is_binary(request.headers):
            try:
                return [structured(request.headers, body)], True
            except BodyError as error:
                raise RequestError(400, "Bad Request", str(error)) from None
        form = Format.of(request.headers.get("content-type", ""))
        if form is None:
            raise RequestError(
                415, "Unsupported Media Type",
                "send application/cloudevents+json, application/cloudevents-batch+json, "
                "application/json, or a CloudEvent in binary mode (ce-* headers)",
            )  # fmt: skip
        try:
            return split(body, form), form.cloud
        except BodyError as error:
            raise RequestError(400, "Bad Request", str(error)) from None

    async def _ingest(
        self, tenant: str, items: list[Item], *, cloud: bool, refused: Sequence[Refusal] = ()
    ) -> tuple[int, Admitted]:
        """The one admission path behind every dialect: size and rate limits, the checks,
        and Kafka's acknowledgement of what was accepted. ``refused`` are events a dialect
        could not translate into items. Returns the request's number of events and what
        was admitted, every refusal in it in the request's order."""
        count = len(items) + len(refused)
        if not count:
            raise RequestError(400, "Bad Request", "the batch is empty")
        metrics.EVENTS_RECEIVED.inc(count)
        if count > self.settings.max_batch_events:
            raise RequestError(
                413, "Content Too Large",
                f"a batch of {count} events; send at most "
                f"{self.settings.max_batch_events} per request",
            )  # fmt: skip
        wait = self.limiter.take(tenant, count)
        if wait > 0:
            raise RequestError(
                429, "Too Many Requests",
                f"tenant {tenant!r} is over {self.settings.tenant_events_per_second:g} "
                f"events/s; retry after {math.ceil(wait)} s",
                **{"Retry-After": str(math.ceil(wait))},
            )  # fmt: skip
        admit = self.admission.cloud_events if cloud else self.admission.plain_events
        try:
            admitted = admit(tenant, items)
        except OtherTenantError as error:
            raise RequestError(403, "Forbidden", str(error)) from None
        if refused:
            admitted.refused = sorted([*refused, *admitted.refused], key=lambda r: r.index)
        if admitted.events:
            await self._publish(admitted.events)
        accepted = count - len(admitted.refused)
        metrics.EVENTS_ACCEPTED.labels(tenant).inc(accepted)
        for refusal in admitted.refused:
            metrics.EVENTS_REFUSED.labels(refusal.reason).inc()
        if admitted.refused:
            log.info(
                "refused %d of %d events", len(admitted.refused), count,
                extra={"tenant": tenant, "accepted": accepted, "refused": len(admitted.refused),
                       "reasons": sorted({r.reason for r in admitted.refused})},
            )  # fmt: skip
        return count, admitted

    def _tenant(self, request: Request, scope: str = INGEST) -> str:
        """The tenant the request's key acts for, if its scope allows ``scope``."""
        return self._key(request, scope).tenant

    def _key(self, request: Request, scope: str = INGEST) -> KeyRecord:
        """The request's key, if its scope allows ``scope``."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        try:
            record = self.keys.record_of(key.strip()) if scheme.lower() == "bearer" else None
        except KeyFileError as error:
            log.error("%s", error)
            raise RequestError(503, "Service Unavailable", "API keys cannot be read") from None
        if record is None:
            raise RequestError(
                401, "Unauthorized", "send a valid API key as 'Authorization: Bearer <key>'",
                **{"WWW-Authenticate": 'Bearer realm="meterline"'},
            )  # fmt: skip
        if not record.allows(scope):
            raise RequestError(
                403, "Forbidden",
                f"this is an {record.scope} key; managing subscriptions and correcting usage "
                "need an admin key (meterline keys create --tenant T --scope admin)",
            )  # fmt: skip
        return record

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_request_bytes
        too_large = RequestError(413, "Content Too Large", f"a request body may hold {limit} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _publish(self, events: Any) -> None:
        try:
            await self.publisher.send(events)
        except KafkaError as error:
            log.warning("Kafka did not acknowledge %d events: %s", len(events), error)
            raise RequestError(
                503, "Service Unavailable",
                "Kafka did not acknowledge the events, so none is reported accepted; "
                "resend them with the same ids (duplicates are dropped)",
                **{"Retry-After": "1"},
            ) from None  # fmt: skip


Wanted = TypeVar("Wanted")


def _decoded(body: bytes, kind: type[Wanted], what: str) -> Wanted:
    """The body as ``kind``, or a 400 saying why it is not ``what`` was asked for."""
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise RequestError(400, "Bad Request", f"the body is not {what}: {error}") from None


async def deliver(outgoing: Outgoing) -> Outcome:
    """POST one of a handler's deliveries (a webhook, a dunning event): its outcome, the
    receiver's status or why none came (never raises)."""
    try:
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_SECONDS) as client:
            response = await client.post(outgoing.url, content=outgoing.body.encode(),
                                         headers=outgoing.headers)  # fmt: skip
    except httpx.HTTPError as error:
        return Outcome(outgoing.key, 0, type(error).__name__)
    return Outcome(outgoing.key, response.status_code, f"it answered {response.status_code}")


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer: meterline's own, or a peer dialect's (Lago's, Stripe's)."""
    return Response(_encoder.encode(body), status, headers, media_type="application/json")


async def _no_route(request: Request, error: Exception) -> Response:
    """Unknown paths and methods answer a problem document too, like every other error."""
    if isinstance(error, HTTPException) and error.status_code == 405:
        return RequestError(405, "Method Not Allowed",
                            f"{request.method} is not allowed on {request.url.path}",
                            **(error.headers or {})).response()  # fmt: skip
    return RequestError(404, "Not Found", f"no endpoint {request.url.path}; the endpoints "
                        "are listed in /openapi.json").response()  # fmt: skip


def _store_unavailable(error: StoreUnavailableError) -> Response:
    """503: the detail (an internal address, the store's own words) goes to the log only."""
    log.warning("%s", error)
    return RequestError(503, "Service Unavailable", STORE_UNAVAILABLE,
                        **{"Retry-After": "1"}).response()  # fmt: skip
