"""The store of webhook endpoints, messages, attempts and the outbox's cursor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from base.clickhouse import TIMESTAMP, TableStore, and_tenant, as_utc
from webhooks.messages import Message

ATTEMPT, REPLAY = "attempt", "replay"  # an attempt's kind; a replay restarts the count


@dataclass(frozen=True)
class Endpoint:
    tenant: str
    endpoint_id: str
    url: str
    secret: str
    types: tuple[str, ...]  # the message types it takes; () for every type
    created_at: datetime
    removed: bool = False

    def takes(self, message: Message) -> bool:
        """Whether the message is for it: of a type it takes, about what happened once it
        existed (a new endpoint is not sent last month's invoices)."""
        return (message.tenant == self.tenant and message.occurred_at >= self.created_at
                and (not self.types or message.type in self.types))  # fmt: skip


@dataclass(frozen=True)
class Attempt:
    tenant: str
    message_id: str
    endpoint_id: str
    attempted_at: datetime
    kind: str  # attempt or replay
    status: int  # the receiver's answer; 0 when none came (and for a replay)
    detail: str


class WebhookStore(TableStore):
    def write_endpoint(self, endpoint: Endpoint) -> None:
        now = datetime.now(UTC)
        self._client.insert(
            self._table("webhook_endpoints"),
            [[endpoint.tenant, endpoint.endpoint_id, endpoint.url, endpoint.secret,
              list(endpoint.types), endpoint.removed, endpoint.created_at,
              int(now.timestamp() * 1_000_000)]],
            column_names=["tenant", "endpoint_id", "url", "secret", "types", "removed",
                          "created_at", "version"],
        )  # fmt: skip

    def endpoints(self, tenant: str | None = None) -> list[Endpoint]:
        """The endpoints not removed, by tenant and id."""
        rows = self._client.query(
            "SELECT tenant, endpoint_id, url, secret, types, created_at "
            f"FROM {self._table('webhook_endpoints')} FINAL WHERE NOT removed"
            + and_tenant(tenant) + " ORDER BY tenant, endpoint_id",
            parameters={"tenant": tenant},
        ).result_rows  # fmt: skip
        return [Endpoint(t, e, url, secret, tuple(types), as_utc(at))
                for t, e, url, secret, types, at in rows]  # fmt: skip

    def known_messages(self, tenant_ids: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of (tenant, message id) are stored already."""
        if not tenant_ids:
            return set()
        rows = self._client.query(
            f"SELECT DISTINCT tenant, message_id FROM {self._table('webhook_messages')} "
            "WHERE (tenant, message_id) IN {keys:Array(Tuple(String, String))}",
            parameters={"keys": list(tenant_ids)},
        ).result_rows
        return {(t, m) for t, m in rows}

    def write_messages(self, messages: Sequence[Message]) -> None:
        now = datetime.now(UTC)
        self._client.insert_arrow(self._table("webhook_messages"), pa.table({
            "tenant": [m.tenant for m in messages],
            "message_id": [m.id for m in messages],
            "type": [m.type for m in messages],
            "occurred_at": pa.array([m.occurred_at for m in messages], type=TIMESTAMP),
            "body": [m.body.decode() for m in messages],
            "recorded_at": pa.array([now] * len(messages), type=TIMESTAMP),
        }))  # fmt: skip

    def messages(
        self,
        since: datetime,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[Message]:
        """Messages recorded at or after ``since`` (or the ones ``ids``, whenever made),
        oldest first, each with the body it was first recorded with."""
        where = "recorded_at >= {since:DateTime64(3, 'UTC')}" if ids is None else (
            "message_id IN {ids:Array(String)}"
        )  # fmt: skip
        rows = self._client.query(
            "SELECT tenant, message_id, any(type), min(occurred_at), argMin(body, recorded_at) "
            f"FROM {self._table('webhook_messages')} WHERE {where}" + and_tenant(tenant)
            + " GROUP BY tenant, message_id ORDER BY min(occurred_at), message_id",
            parameters={"since": since, "tenant": tenant, "ids": list(ids or ())},
        ).result_rows  # fmt: skip
        return [Message(t, m, kind, as_utc(at), body.encode())
                for t, m, kind, at, body in rows]  # fmt: skip

    def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        self._client.insert_arrow(self._table("webhook_attempts"), pa.table({
            "tenant": [a.tenant for a in attempts],
            "message_id": [a.message_id for a in attempts],
            "endpoint_id": [a.endpoint_id for a in attempts],
            "attempted_at": pa.array([a.attempted_at for a in attempts], type=TIMESTAMP),
            "kind": [a.kind for a in attempts],
            "status": pa.array([a.status for a in attempts], type=pa.uint16()),
            "detail": [a.detail for a in attempts],
        }))  # fmt: skip

    def attempts(
        self,
        tenant: str | None = None,
        message_ids: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> dict[tuple[str, str], list[Attempt]]:
        """Attempts (and replays) by (message id, endpoint id), in time order: of the
        messages named, or made at or after ``since``."""
        where = "1 = 1" + and_tenant(tenant)
        if message_ids is not None:
            where += " AND message_id IN {ids:Array(String)}"
        if since is not None:
            where += (f" AND message_id IN (SELECT message_id FROM "
                      f"{self._table('webhook_messages')} "
                      "WHERE recorded_at >= {since:DateTime64(3, 'UTC')})")  # fmt: skip
        rows = self._client.query(
            "SELECT tenant, message_id, endpoint_id, attempted_at, kind, status, detail "
            f"FROM {self._table('webhook_attempts')} WHERE {where} "
            "ORDER BY attempted_at, kind",
            parameters={"tenant": tenant, "ids": list(message_ids or ()), "since": since},
        ).result_rows
        found: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
        for t, message, endpoint, at, kind, status, detail in rows:
            found[message, endpoint].append(Attempt(t, message, endpoint, as_utc(at), kind,
                                                    status, detail))  # fmt: skip
        return found

    def replayed_since(self, since: datetime) -> list[tuple[str, str]]:
        """(tenant, message id) of the replays asked for at or after ``since``."""
        rows = self._client.query(
            f"SELECT DISTINCT tenant, message_id FROM {self._table('webhook_attempts')} "
            "WHERE kind = {kind:String} AND attempted_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"kind": REPLAY, "since": since},
        ).result_rows
        return [(t, m) for t, m in rows]

    def cursor(self, name: str) -> datetime | None:
        rows = self._client.query(
            f"SELECT through FROM {self._table('webhook_cursor')} FINAL WHERE name = {{n:String}}",
            parameters={"n": name},
        ).result_rows
        return as_utc(rows[0][0]) if rows else None

    def advance(self, name: str, through: datetime) -> None:
        self._client.insert(
            self._table("webhook_cursor"),
            [[name, through, int(datetime.now(UTC).timestamp() * 1_000_000)]],
            column_names=["name", "through", "version"],
        )
