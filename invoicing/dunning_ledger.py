"""The store of dunning policies and of the actions taken (the outbox of their events)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from base.clickhouse import TableStore, and_tenant, as_utc
from invoicing.dunning import Policy

_policy = msgspec.json.Decoder(Policy)


@dataclass(frozen=True)
class Action:
    tenant: str
    invoice_id: str
    step: int  # an index of the policy's steps
    action: str
    event: bytes  # the JSON delivered
    created_at: datetime
    delivered_at: datetime | None
    attempts: int


class DunningLedger(TableStore):
    def policy(self, tenant: str) -> Policy:
        """The tenant's policy, or the default one."""
        rows = self._client.query(
            f"SELECT policy FROM {self._table('dunning_policies')} FINAL "
            "WHERE tenant = {tenant:String}",
            parameters={"tenant": tenant},
        ).result_rows
        return _policy.decode(rows[0][0]) if rows else Policy()

    def set_policy(self, tenant: str, policy: Policy) -> None:
        now = datetime.now(UTC)
        self._client.insert(
            self._table("dunning_policies"),
            [[tenant, msgspec.json.encode(policy).decode(), int(now.timestamp() * 1_000_000)]],
            column_names=["tenant", "policy", "version"],
        )

    def actions(self, tenant: str | None = None) -> list[Action]:
        rows = self._client.query(
            "SELECT tenant, invoice_id, step, action, event, created_at, delivered_at, attempts "
            f"FROM {self._table('dunning_actions')} FINAL WHERE 1 = 1" + and_tenant(tenant)
            + " ORDER BY created_at, tenant, invoice_id, step",
            parameters={"tenant": tenant},
        ).result_rows  # fmt: skip
        return [Action(t, i, s, a, e.encode(), as_utc(c), as_utc(d) if d else None, n)
                for t, i, s, a, e, c, d, n in rows]  # fmt: skip

    def taken(self, tenant: str | None = None) -> dict[tuple[str, str], set[int]]:
        """(tenant, invoice id) -> the steps taken for it."""
        found: dict[tuple[str, str], set[int]] = defaultdict(set)
        for action in self.actions(tenant):
            found[(action.tenant, action.invoice_id)].add(action.step)
        return found

    def write(self, actions: list[Action]) -> None:
        """New actions, or ones delivered or tried again (a higher version wins)."""
        if not actions:
            return
        version = int(datetime.now(UTC).timestamp() * 1_000_000)
        self._client.insert(
            self._table("dunning_actions"),
            [[a.tenant, a.invoice_id, a.step, a.action, a.event.decode(), a.created_at,
              a.delivered_at, a.attempts, version] for a in actions],
            column_names=["tenant", "invoice_id", "step", "action", "event", "created_at",
                          "delivered_at", "attempts", "version"],
        )  # fmt: skip
