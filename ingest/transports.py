"""How the SDK delivers a batch: over HTTP to the gateway, or straight to Kafka for services
inside the cluster. Both take pre-encoded plain events and say which were refused; a
failure worth retrying raises ``RetryableError``, so the client resends the same events
(the same ids)."""

from __future__ import annotations

from typing import Protocol

import httpx
import msgspec
from aiokafka.errors import KafkaError

from base.problems import ProblemDocument
from ingest.admission import Admission, OtherTenantError
from ingest.producer import Publisher
from ingest.wire import Accepted, Item, Refusal

_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
_accepted = msgspec.json.Decoder(Accepted)
_problem = msgspec.json.Decoder(ProblemDocument)


class RetryableError(Exception):
    """Nothing in the batch is known to be stored; send it again (after ``after`` s, if set)."""

    def __init__(self, detail: str, after: float | None = None) -> None:
        super().__init__(detail)
        self.after = after


class Transport(Protocol):
    async def start(self) -> None: ...

    async def deliver(self, events: list[bytes]) -> list[Refusal]: ...

    async def close(self) -> None: ...


class HttpTransport:
    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=timeout,
        )

    async def start(self) -> None:
        return None

    async def deliver(self, events: list[bytes]) -> list[Refusal]:
        body = b"[" + b",".join(events) + b"]"
        try:
            response = await self._client.post("/v1/events", content=body)
        except httpx.TransportError as error:
            raise RetryableError(f"{type(error).__name__}: {error}") from None
        if response.status_code in (202, 422):
            return _accepted.decode(response.content).rejected
        detail = _detail(response)
        if response.status_code in _RETRYABLE:
            raise RetryableError(detail, _retry_after(response))
        # The request as a whole was refused (bad key, another tenant, too large): every
        # event of it is refused for that reason; resending would not help.
        reason = f"http_{response.status_code}"
        return [Refusal(index, None, reason, detail) for index in range(len(events))]

    async def close(self) -> None:
        await self._client.aclose()


class KafkaTransport:
    """Checks events as the gateway does, then sends them to the events topic (acks=all)."""

    def __init__(self, publisher: Publisher, admission: Admission, tenant: str) -> None:
        self._publisher = publisher
        self._admission = admission
        self._tenant = tenant

    async def start(self) -> None:
        await self._publisher.__aenter__()

    async def deliver(self, events: list[bytes]) -> list[Refusal]:
        items = [Item(index, raw) for index, raw in enumerate(events)]
        try:
            admitted = self._admission.plain_events(self._tenant, items)
        except OtherTenantError as error:
            return [Refusal(i, None, "other_tenant", str(error)) for i in range(len(events))]
        try:
            await self._publisher.send(admitted.events)
        except KafkaError as error:
            raise RetryableError(f"Kafka did not acknowledge: {error}") from None
        return admitted.refused

    async def close(self) -> None:
        await self._publisher.__aexit__(None, None, None)


def _detail(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {_problem.decode(response.content).detail}"
    except (msgspec.DecodeError, msgspec.ValidationError):
        return f"{response.status_code}: {response.text[:200]}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
