"""The subscription store: subscriptions (each row versioned; readers keep the highest),
customers, and the history of changes, which is only ever added to."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import msgspec
import pyarrow as pa

from base.clickhouse import TIMESTAMP, TableStore, as_utc, where_equal
from rating.period import midnight
from subscriptions.model import (
    AppliedCoupon,
    Change,
    Customer,
    GrantedFeature,
    Owner,
    Subscription,
    Terms,
)

_COLUMNS = ("tenant, subscription, customer, plan, started_at, ended_at, change_days, "
            "change_plans, change_moments, anchor_day, version, coupon_days, coupon_ids, "
            "coupon_ends, features")  # fmt: skip
_CUSTOMER_COLUMNS = ("tenant, customer, name, external_id, tax_rate, currency, address, tax_id, "
                     "payment_terms_days, country, region, tax_exempt")  # fmt: skip
_NOT_ENDED = date(1970, 1, 1)  # a coupon's end as stored when it has none
_features = msgspec.json.Encoder()
_granted = msgspec.json.Decoder(list[GrantedFeature])


class SubscriptionStore(TableStore):
    def write(self, rows: Sequence[Subscription]) -> None:
        """Store ``rows``, each under its own version."""
        table = pa.table(
            {
                "tenant": [row.tenant for row in rows],
                "subscription": [row.subscription for row in rows],
                "customer": [row.customer for row in rows],
                "plan": [row.plan for row in rows],
                "started_at": pa.array([row.started_at for row in rows], type=TIMESTAMP),
                "ended_at": pa.array([row.ended_at for row in rows], type=TIMESTAMP),
                "change_days": pa.array(
                    [[at.astimezone(UTC).date() for at, _ in row.changes] for row in rows],
                    type=pa.list_(pa.date32()),
                ),
                "change_moments": pa.array(
                    [[at for at, _ in row.changes] for row in rows], type=pa.list_(TIMESTAMP)
                ),
                "change_plans": pa.array(
                    [[plan for _, plan in row.changes] for row in rows], type=pa.list_(pa.string())
                ),
                "version": pa.array([row.version for row in rows], type=pa.uint64()),
                "anchor_day": pa.array([row.anchor_day for row in rows], type=pa.uint8()),
                "coupon_days": pa.array(
                    [[c.day for c in row.coupons] for row in rows], type=pa.list_(pa.date32())
                ),
                "coupon_ids": pa.array(
                    [[c.coupon for c in row.coupons] for row in rows], type=pa.list_(pa.string())
                ),
                "coupon_ends": pa.array(
                    [[c.ended or _NOT_ENDED for c in row.coupons] for row in rows],
                    type=pa.list_(pa.date32()),
                ),
                "features": [_features.encode(list(row.features)).decode() for row in rows],
            }
        )
        self._client.insert_arrow(self._table("subscriptions"), table)

    def subscriptions(
        self,
        tenant: str | None = None,
        subscription: str | None = None,
        limit: int = 0,
        customer: str | None = None,
    ) -> list[Subscription]:
        """Subscriptions as stored (of one tenant; one of them; one customer's), in id
        order; the first ``limit`` when it is not 0."""
        named = {"tenant": tenant, "subscription": subscription, "customer": customer}
        rows = self._client.query(
            f"SELECT {_COLUMNS} FROM {self._table('subscriptions')} FINAL "
            f"{where_equal(named)} ORDER BY tenant, subscription"
            + (" LIMIT {limit:UInt32}" if limit else ""),
            parameters={**named, "limit": limit},
        ).result_rows
        return [_subscription(row) for row in rows]

    def subscription(self, tenant: str, subscription: str) -> Subscription | None:
        found = self.subscriptions(tenant, subscription)
        return found[0] if found else None

    def count(self, tenant: str) -> int:
        return self.connection.count("subscriptions", tenant)

    def written_since(self, version: int) -> list[Subscription]:
        """Rows written with a version above ``version`` (every version of each, without
        FINAL: the reader keeps the highest)."""
        rows = self._client.query(
            f"SELECT {_COLUMNS} FROM {self._table('subscriptions')} "
            "WHERE version > {since:Int64}",
            parameters={"since": version},
        ).result_rows
        return [_subscription(row) for row in rows]

    def terms_written_since(self, version: int) -> list[tuple[Owner, Terms]]:
        """What the worker's directory loads: the terms of each row written since."""
        return [(row.owner, row.terms()) for row in self.written_since(version)]

    def anchor_days(self, owners: Sequence[Owner]) -> dict[Owner, int]:
        """The anchor day of each of these subscriptions that is known."""
        rows = self._client.query(
            f"SELECT tenant, subscription, anchor_day FROM {self._table('subscriptions')} FINAL "
            "WHERE (tenant, subscription) IN {owners:Array(Tuple(String, String))}",
            parameters={"owners": list(owners)},
        ).result_rows
        return {(tenant, sub): anchor for tenant, sub, anchor in rows}

    def write_customers(self, rows: Sequence[Customer], version: int) -> None:
        table = pa.table(
            {
                "tenant": [row.tenant for row in rows],
                "customer": [row.customer for row in rows],
                "name": [row.name for row in rows],
                "external_id": [row.external_id for row in rows],
                "tax_rate": pa.array([row.tax_rate for row in rows], type=pa.decimal128(9, 4)),
                "currency": [row.currency for row in rows],
                "address": [row.address for row in rows],
                "tax_id": [row.tax_id for row in rows],
                "payment_terms_days": pa.array(
                    [row.payment_terms_days for row in rows], type=pa.uint16()
                ),
                "country": [row.country for row in rows],
                "region": [row.region for row in rows],
                "tax_exempt": pa.array([row.tax_exempt for row in rows], type=pa.bool_()),
                "version": pa.array([version] * len(rows), type=pa.uint64()),
            }
        )
        self._client.insert_arrow(self._table("customers"), table)

    def customers(self, tenant: str | None = None) -> dict[tuple[str, str], Customer]:
        rows = self._client.query(
            f"SELECT {_CUSTOMER_COLUMNS} "
            f"FROM {self._table('customers')} FINAL {where_equal({'tenant': tenant})}",
            parameters={"tenant": tenant},
        ).result_rows
        return {(row[0], row[1]): Customer(*row) for row in rows}

    def customer(self, tenant: str, customer: str) -> Customer | None:
        rows = self._client.query(
            f"SELECT {_CUSTOMER_COLUMNS} FROM {self._table('customers')} FINAL "
            "WHERE tenant = {tenant:String} AND customer = {customer:String}",
            parameters={"tenant": tenant, "customer": customer},
        ).result_rows
        return Customer(*rows[0]) if rows else None

    def record_changes(self, changes: Sequence[Change]) -> None:
        """Add to the subscriptions' history (never rewritten)."""
        self._client.insert_arrow(
            self._table("subscription_changes"),
            pa.table(
                {
                    "tenant": [c.tenant for c in changes],
                    "subscription": [c.subscription for c in changes],
                    "recorded_at": pa.array([c.recorded_at for c in changes], type=TIMESTAMP),
                    "kind": [c.kind for c in changes],
                    "effective_at": pa.array([c.effective_at for c in changes], type=TIMESTAMP),
                    "plan": [c.plan for c in changes],
                    "detail": [c.detail for c in changes],
                }
            ),
        )

    def history(self, tenant: str, subscription: str) -> list[Change]:
        return self._changes(
            "tenant = {tenant:String} AND subscription = {subscription:String}",
            {"tenant": tenant, "subscription": subscription},
        )

    def changes_since(self, since: datetime) -> list[Change]:
        """Every subscription's changes recorded at or after ``since``."""
        return self._changes("recorded_at >= {since:DateTime64(3, 'UTC')}", {"since": since})

    def _changes(self, where: str, parameters: dict[str, object]) -> list[Change]:
        rows = self._client.query(
            "SELECT tenant, subscription, recorded_at, kind, effective_at, plan, detail "
            f"FROM {self._table('subscription_changes')} WHERE {where} "
            "ORDER BY recorded_at",
            parameters=parameters,
        ).result_rows
        return [
            Change(t, s, as_utc(at), kind, as_utc(eff) if eff else None, plan, detail)
            for t, s, at, kind, eff, plan, detail in rows
        ]

    def finalized_through(self, tenant: str, subscription: str) -> date | None:
        """The latest period of the subscription whose invoice is finalized. The invoices
        table is invoicing's; the registry reads this one fact of it because a change must
        never reach into a finalized invoice, and invoicing sits above this stage."""
        found = self._client.query(
            f"SELECT max(period_start) FROM {self._table('invoices')} FINAL "
            "WHERE tenant = {tenant:String} AND subscription = {subscription:String} "
            "AND status = 'finalized'",
            parameters={"tenant": tenant, "subscription": subscription},
        ).result_rows
        period = found[0][0] if found else None
        return period if period and period.year > 1970 else None


def _subscription(row: Sequence[object]) -> Subscription:
    tenant, sub, customer, plan, started, ended, days, plans, moments, *rest = row
    anchor, version, coupon_days, coupon_ids, coupon_ends, features = rest
    if len(moments) != len(days):  # type: ignore[arg-type]
        moments = [midnight(day) for day in days]  # type: ignore[attr-defined]  # a row from before 0029
    applied = tuple(AppliedCoupon(day, coupon, None if end == _NOT_ENDED else end)
                    for day, coupon, end in zip(coupon_days, coupon_ids, coupon_ends,  # type: ignore[call-overload]
                                                strict=True))  # fmt: skip
    return Subscription(
        tenant, sub, customer, plan, as_utc(started), as_utc(ended) if ended else None,  # type: ignore[arg-type]
        tuple(zip(map(as_utc, moments), plans, strict=True)), anchor, version, applied,  # type: ignore[call-overload,arg-type]
        tuple(_granted.decode(str(features))),
    )  # fmt: skip
