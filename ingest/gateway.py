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

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import msgspec
from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from base import metrics
from base.metrics import exposition
from base.problems import ProblemDocument
from base.settings import Settings
from ingest.admission import Admission, Limits, OtherTenantError
from ingest.api_keys import ADMIN, INGEST, KeyFileError, KeyRing
from ingest.openapi import document
from ingest.producer import Publisher
from ingest.rate_limit import RateLimiter
from ingest.store_access import DirectStore, StoreAccess, StoreUnavailableError
from ingest.wire import MAX_IDENTIFIER, Accepted, BodyError, Format, split
from rating.period import LAST_DAY
from rating.plans import PriceBook
from subscriptions.api import RegistryRequest

STORE_UNAVAILABLE = "the store did not answer; try again shortly"

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


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
    ) -> None:
        self.settings = settings
        self.store = store or DirectStore(settings, book, bootstrap_servers)
        self.keys = keys
        self.admission = Admission(
            book, settings.event_window(), Limits(max_event_bytes=settings.max_event_bytes)
        )
        self.limiter = RateLimiter(settings.tenant_events_per_second, settings.tenant_burst_events)
        self.publisher = Publisher(
            bootstrap_servers, settings.events_topic, idempotent=settings.idempotent_producer
        )
        self._openapi = _encoder.encode(document())

    async def __aenter__(self) -> Gateway:
        await self.publisher.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.publisher.__aexit__(*exc_info)
        await self.store.close()

    def asgi(self, *, own_lifespan: bool = False) -> Starlette:
        """The ASGI app; with ``own_lifespan`` it starts and stops the producer itself."""

        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with self:
                yield

        return Starlette(
            routes=[
                Route("/v1/events", _measured("events", self.post_events), methods=["POST"]),
                Route(
                    "/v1/usage/{subscription}", _measured("usage", self.get_usage), methods=["GET"]
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
                Route("/v1/health", self.health, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            lifespan=lifespan if own_lifespan else None,
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
        return Response(_encoder.encode(body), 200 if healthy else 503,
                        media_type="application/json")  # fmt: skip

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
        return Response(_encoder.encode(answer), media_type="application/json")

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

    async def post_events(self, request: Request) -> Response:
        try:
            return await self._post_events(request)
        except RequestError as problem:
            return problem.response()

    async def _post_events(self, request: Request) -> Response:
        tenant = self._tenant(request)
        form = Format.of(request.headers.get("content-type", ""))
        if form is None:
            raise RequestError(
                415, "Unsupported Media Type",
                "send application/cloudevents+json, application/cloudevents-batch+json "
                "or application/json",
            )  # fmt: skip
        body = await self._body(request)
        try:
            items = split(body, form)
        except BodyError as error:
            raise RequestError(400, "Bad Request", str(error)) from None
        if not items:
            raise RequestError(400, "Bad Request", "the batch is empty")
        metrics.EVENTS_RECEIVED.inc(len(items))
        if len(items) > self.settings.max_batch_events:
            raise RequestError(
                413, "Content Too Large",
                f"a batch of {len(items)} events; send at most "
                f"{self.settings.max_batch_events} per request",
            )  # fmt: skip
        wait = self.limiter.take(tenant, len(items))
        if wait > 0:
            raise RequestError(
                429, "Too Many Requests",
                f"tenant {tenant!r} is over {self.settings.tenant_events_per_second:g} "
                f"events/s; retry after {math.ceil(wait)} s",
                **{"Retry-After": str(math.ceil(wait))},
            )  # fmt: skip
        admit = self.admission.cloud_events if form.cloud else self.admission.plain_events
        try:
            admitted = admit(tenant, items)
        except OtherTenantError as error:
            raise RequestError(403, "Forbidden", str(error)) from None
        if admitted.events:
            await self._publish(admitted.events)
        answer = Accepted(len(items) - len(admitted.refused), admitted.refused)
        metrics.EVENTS_ACCEPTED.labels(tenant).inc(answer.accepted)
        for refusal in admitted.refused:
            metrics.EVENTS_REFUSED.labels(refusal.reason).inc()
        if admitted.refused:
            log.info(
                "refused %d of %d events", len(admitted.refused), len(items),
                extra={"tenant": tenant, "accepted": answer.accepted,
                       "refused": len(admitted.refused),
                       "reasons": sorted({r.reason for r in admitted.refused})},
            )  # fmt: skip
        status = 202 if answer.accepted else 422
        return Response(_encoder.encode(answer), status, media_type="application/json")

    def _tenant(self, request: Request, scope: str = INGEST) -> str:
        """The tenant the request's key acts for, if its scope allows ``scope``."""
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
                f"this is an {record.scope} key; managing subscriptions needs an admin key "
                "(meterline keys create --tenant T --scope admin)",
            )  # fmt: skip
        return record.tenant

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


def _store_unavailable(error: StoreUnavailableError) -> Response:
    """503: the detail (an internal address, the store's own words) goes to the log only."""
    log.warning("%s", error)
    return RequestError(503, "Service Unavailable", STORE_UNAVAILABLE,
                        **{"Retry-After": "1"}).response()  # fmt: skip
