"""The store of prepaid credit grants, and what invoices took of each."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa

from base.clickhouse import AMOUNT, TIMESTAMP, Connection, TableStore, and_tenant
from invoicing.credits import Grant
from rating.period import Period
from subscriptions.store import SubscriptionStore

_COLUMNS = ("tenant, grant_id, customer, subscription, currency, amount, priority, "
            "effective_from, expires_on, kind, price, reason, voided, meter")  # fmt: skip


@dataclass(frozen=True)
class Application:
    """One invoice's credit line of a grant."""

    grant_id: str
    invoice_id: str
    period: date
    subscription: str
    status: str  # of the invoice: draft or finalized
    amount: Decimal  # taken off, positive
    units: Decimal = Decimal(0)  # of a grant in units: the units it took

    @property
    def taken(self) -> Decimal:
        """What it took of the grant, in the grant's own terms (units, or money)."""
        return self.units or self.amount


class GrantLedger(TableStore):
    def write(self, grants: Sequence[Grant]) -> None:
        """Grants, new or changed (voided): the latest version of each wins."""
        now = datetime.now(UTC)
        version = int(now.timestamp() * 1_000_000)
        self._client.insert_arrow(self._table("credit_grants"), pa.table({
            "tenant": [g.tenant for g in grants],
            "grant_id": [g.grant_id for g in grants],
            "customer": [g.customer for g in grants],
            "subscription": [g.subscription for g in grants],
            "currency": [g.currency for g in grants],
            "amount": pa.array([g.amount for g in grants], type=AMOUNT),
            "priority": pa.array([g.priority for g in grants], type=pa.uint32()),
            "effective_from": pa.array([g.effective_from for g in grants], type=pa.date32()),
            "expires_on": pa.array([g.expires_on for g in grants], type=pa.date32()),
            "kind": [g.kind for g in grants],
            "price": pa.array([g.price for g in grants], type=AMOUNT),
            "reason": [g.reason for g in grants],
            "voided": pa.array([g.voided for g in grants], type=pa.bool_()),
            "meter": [g.meter for g in grants],
            "created_at": pa.array([now] * len(grants), type=TIMESTAMP),
            "version": pa.array([version] * len(grants), type=pa.uint64()),
        }))  # fmt: skip

    def grants(self, tenant: str | None = None) -> list[Grant]:
        rows = self._client.query(
            f"SELECT {_COLUMNS} FROM {self._table('credit_grants')} FINAL WHERE 1 = 1"
            + and_tenant(tenant) + " ORDER BY tenant, grant_id",
            parameters={"tenant": tenant},
        ).result_rows  # fmt: skip
        return [Grant(*row) for row in rows]

    def applications(self, tenant: str | None = None) -> dict[str, list[Application]]:
        """Every invoice's credit lines (current revisions), by grant."""
        rows = self._client.query(
            "SELECT item, invoice_id, period_start, subscription, status, -amount, quantity "
            f"FROM {self._table('current_invoice_lines')} WHERE kind = 'credit'"
            + and_tenant(tenant) + " ORDER BY period_start, subscription",
            parameters={"tenant": tenant},
        ).result_rows  # fmt: skip
        found: dict[str, list[Application]] = defaultdict(list)
        for grant, *rest in rows:
            found[grant].append(Application(grant, *rest))
        return found


class CreditBalances:
    """Each subscription's prepaid credit in currency as its current period began: the
    grants it may use (its customer's and its own, in effect, not expired or voided) less
    what invoices of earlier periods took; read again every ``REFRESH_SECONDS`` (they
    change only when an earlier period is closed or a grant is made). The worker's credit
    balance alerts subtract the period's live amounts from it."""

    REFRESH_SECONDS = 30.0

    def __init__(self, connection: Connection, clock: Callable[[], float] = time.monotonic):
        self._connection = connection
        self._clock = clock
        self._next = 0.0
        self._balances: dict[tuple[str, str], tuple[str, Decimal]] = {}

    def __call__(self, owner: tuple[str, str]) -> tuple[str, Decimal] | None:
        if self._clock() >= self._next:
            self._balances = self._read(datetime.now(UTC).date())
            self._next = self._clock() + self.REFRESH_SECONDS
        return self._balances.get(owner)

    def _read(self, today: date) -> dict[tuple[str, str], tuple[str, Decimal]]:
        ledger = GrantLedger(self._connection)
        grants = [g for g in ledger.grants() if not g.meter and not g.voided
                  and g.effective_from <= today
                  and (g.expires_on is None or g.expires_on > today)]  # fmt: skip
        if not grants:
            return {}
        applications = ledger.applications()
        found: dict[tuple[str, str], tuple[str, Decimal]] = {}
        for sub in SubscriptionStore(self._connection).subscriptions():
            period = Period.of(today, sub.anchor_day).label
            left: dict[str, Decimal] = defaultdict(Decimal)
            for grant in grants:
                if (grant.tenant, grant.customer) == (sub.tenant, sub.customer) and (
                    grant.subscription in ("", sub.subscription)
                ):
                    taken = sum((a.taken for a in applications.get(grant.grant_id, [])
                                 if a.period < period), Decimal(0))  # fmt: skip
                    left[grant.currency] += grant.amount - taken
            if left:
                currency = max(left, key=lambda c: left[c])
                found[sub.owner] = (currency, left[currency])
        return found


def used_before(applications: dict[str, list[Application]], period: date) -> dict[str, Decimal]:
    """What invoices of periods before ``period`` took of each grant."""
    return {grant: sum((a.taken for a in found if a.period < period), Decimal(0))
            for grant, found in applications.items()}  # fmt: skip


def new_grant_id() -> str:
    """An id for a new grant: random, so never one already given."""
    return f"GR-{secrets.token_hex(6).upper()}"
