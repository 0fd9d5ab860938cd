"""The registry part of the HTTP API, over a store: subscriptions (list, show, import,
change, add-charge, remove-charge, revise, add-coupon, remove-coupon, cancel, renew) and
customers (list, import), made as the ``meterline`` commands make them
(``subscriptions.registry``) and answered as JSON, or as an RFC 9457 problem document.

``answer`` runs where the store is: in the gateway with a ClickHouse server, or in the
worker that owns chDB (the embedded default), to which the gateway forwards the request
as it came. It returns the rows it wrote; the caller publishes them to the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from pydantic import ValidationError

from base.problems import ProblemDocument
from rating.plans import Entitlement, PriceBook
from subscriptions import registry
from subscriptions.imports import (
    NewCustomer,
    NewSubscription,
    SubscriptionFileError,
    customers_from,
    subscriptions_from,
)
from subscriptions.lifecycle import LifecycleError
from subscriptions.model import Customer, Subscription
from subscriptions.registry import Operation, UnknownSubscriptionError
from subscriptions.store import SubscriptionStore

Item = TypeVar("Item", NewSubscription, NewCustomer)
Parsed = TypeVar("Parsed")

MAX_IMPORT = 10_000  # rows per request; a larger import is a file for the CLI


class RegistryRequest(msgspec.Struct, frozen=True):
    tenant: str  # the API key's
    action: str
    subscription: str = ""
    body: bytes = b""  # the request's JSON body, as it came
    limit: int = 100
    customer: str = ""  # for "customer-subscriptions": a customer's id or external id


class RegistryAnswer(msgspec.Struct, frozen=True):
    status: int
    body: msgspec.Raw  # JSON: the result, or a problem document when status >= 400


class CustomerView(msgspec.Struct):
    customer: str
    name: str
    tax_rate: Decimal
    external_id: str
    currency: str
    address: str
    tax_id: str
    payment_terms_days: int
    country: str
    region: str
    tax_exempt: bool


class CustomerList(msgspec.Struct):
    customers: list[CustomerView]
    total: int  # how many the tenant has; at most ``limit`` are listed


class PlanChange(msgspec.Struct, forbid_unknown_fields=True):
    """Move to ``plan`` from the start of ``on`` (UTC; tomorrow by default), the next
    period, or ``now`` (from the next whole second: usage splits there, and fees and the
    commitment are prorated by the second)."""

    plan: str
    on: date | None = None
    at_period_end: bool = False
    now: bool = False


class AddOnChange(msgspec.Struct, forbid_unknown_fields=True):
    """Add (or remove) the price book's add-on ``add_on`` from the start of ``on`` or the
    next period."""

    add_on: str
    on: date | None = None
    at_period_end: bool = False


class CouponChange(msgspec.Struct, forbid_unknown_fields=True):
    """Take on (or end) the price book's coupon ``coupon`` from ``on`` (today by default):
    it discounts the period ``on`` falls in, in full, and after."""

    coupon: str
    on: date | None = None


class PriceRevision(msgspec.Struct, forbid_unknown_fields=True):
    """Every price times (1 + percent/100) from the start of ``on`` or the next period."""

    percent: Decimal
    on: date | None = None
    at_period_end: bool = False


class Cancellation(msgspec.Struct, forbid_unknown_fields=True):
    """End at ``at`` (exclusive; now by default) or when the period ends."""

    at: datetime | None = None
    at_period_end: bool = False


class Renewal(msgspec.Struct, forbid_unknown_fields=True):
    """Remove the end."""


class PlanFrom(msgspec.Struct):
    on: date  # the first day on the plan (in part, for a change made at an instant)
    plan: str
    at: datetime  # when it took effect: a midnight, or the second an immediate change did


class FeatureGrant(msgspec.Struct, forbid_unknown_fields=True):
    """Give the subscription a feature from ``on`` (today by default) until ``until``
    (exclusive) or for good: an entitlement as the price book writes one, or more of a
    metered one its plan gives (its ``limit`` adds to the plan's)."""

    feature: str
    kind: str = "boolean"
    enabled: bool = True
    config: dict[str, Any] | None = None
    meter: str | None = None
    limit: Decimal | None = None
    enforcement: str = "soft"
    on: date | None = None
    until: date | None = None


class FeatureRevocation(msgspec.Struct, forbid_unknown_fields=True):
    """End what was given of ``feature`` from ``on`` (today by default)."""

    feature: str
    on: date | None = None


class FeatureFrom(msgspec.Struct):
    feature: str
    on: date
    until: date | None
    entitlement: dict[str, Any]


class CouponFrom(msgspec.Struct):
    coupon: str
    on: date  # the first day it applies to
    ended: date | None  # removed from this day on


class SubscriptionView(msgspec.Struct):
    tenant: str
    subscription: str
    customer: str
    plan: str  # the plan it is on now
    started_at: datetime
    ended_at: datetime | None
    anchor_day: int  # its billing periods start on this day of the month
    plans: list[PlanFrom]  # the plan it started on, then every change, in day order
    coupons: list[CouponFrom]  # the coupons it took on, in the order applied
    features: list[FeatureFrom]  # what was given to it beyond its plan, in order


class HistoryEntry(msgspec.Struct):
    recorded_at: datetime
    change: str
    effective_at: datetime | None
    plan: str
    detail: str


class SubscriptionDetail(SubscriptionView):
    history: list[HistoryEntry]
    finalized_through: str | None  # the last period with a finalized invoice, "2026-10"


class SubscriptionList(msgspec.Struct):
    subscriptions: list[SubscriptionView]
    total: int  # how many the tenant has; at most ``limit`` are listed


class Imported(msgspec.Struct):
    imported: int
    subscriptions: list[SubscriptionView]


_encoder = msgspec.json.Encoder()


class _RefusedError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def answer(
    store: SubscriptionStore,
    book: PriceBook,
    notice_seconds: float,
    request: RegistryRequest,
    now: datetime,
) -> tuple[RegistryAnswer, list[Subscription]]:
    """The answer to ``request``, and the rows it wrote."""
    try:
        status, body, written = _dispatch(store, book, notice_seconds, request, now)
    except _RefusedError as problem:
        document = ProblemDocument(problem.title, problem.status, problem.detail)
        return RegistryAnswer(problem.status, msgspec.Raw(_encoder.encode(document))), []
    return RegistryAnswer(status, msgspec.Raw(_encoder.encode(body))), written


def _dispatch(
    store: SubscriptionStore,
    book: PriceBook,
    notice_seconds: float,
    request: RegistryRequest,
    now: datetime,
) -> tuple[int, Any, list[Subscription]]:
    tenant, action = request.tenant, request.action
    today = now.astimezone(UTC)  # what each view shows the plan of
    if action == "list":
        rows = store.subscriptions(tenant, limit=request.limit)
        total = store.count(tenant)
        return 200, SubscriptionList([view(row, today) for row in rows], total), []
    if action == "show":
        return 200, _detail(store, tenant, request.subscription, today), []
    if action == "customer-subscriptions":
        rows = _of_customer(store, tenant, request.customer)
        return 200, SubscriptionList([view(row, today) for row in rows[: request.limit]],
                                     len(rows)), []  # fmt: skip
    if action == "list-customers":
        known = sorted(store.customers(tenant).values(), key=lambda c: c.customer)
        return 200, CustomerList([_customer(c) for c in known[: request.limit]], len(known)), []
    if action == "import-customers":
        customers = _checked_items(request, NewCustomer, "customers", customers_from)
        registry.import_customers(store, customers, now)
        return 201, CustomerList([_customer(c) for c in customers], len(customers)), []
    if action == "import":
        rows = _imported(request, book)
        try:
            written = registry.import_subscriptions(store, rows, book, now, "the request")
        except LifecycleError as error:
            raise _RefusedError(422, "Unprocessable Content", str(error)) from None
        return 201, Imported(len(written), [view(row, today) for row in written]), written
    operations = _operations(book, registry.change_notice(notice_seconds), now)
    make = operations.get(action)
    if make is None:
        raise _RefusedError(
            404, "Not Found", f"no action {action!r} (actions: {', '.join(operations)})"
        )
    try:
        operation = make(request.body)
        changed = registry.perform(store, tenant, request.subscription, operation, now)
    except UnknownSubscriptionError as error:
        raise _RefusedError(404, "Not Found", str(error)) from None
    except LifecycleError as error:
        raise _RefusedError(422, "Unprocessable Content", str(error)) from None
    return 200, _detail(store, tenant, request.subscription, today), [changed]


def _operations(
    book: PriceBook, notice: timedelta, now: datetime
) -> dict[str, Callable[[bytes], Operation]]:
    def change(body: bytes) -> Operation:
        asked = _decoded(body, PlanChange)
        when = registry.FromDay(asked.on, asked.at_period_end, now, notice, asked.now)
        return registry.plan_change(asked.plan, when, book)

    def add_on(adding: bool) -> Callable[[bytes], Operation]:
        def vary(body: bytes) -> Operation:
            asked = _decoded(body, AddOnChange)
            when = registry.FromDay(asked.on, asked.at_period_end, now, notice)
            return registry.add_on_change(asked.add_on, adding, when, book)

        return vary

    def revise(body: bytes) -> Operation:
        asked = _decoded(body, PriceRevision)
        when = registry.FromDay(asked.on, asked.at_period_end, now, notice)
        return registry.price_revision(asked.percent, when, book)

    def coupon(adding: bool) -> Callable[[bytes], Operation]:
        def vary(body: bytes) -> Operation:
            asked = _decoded(body, CouponChange)
            return registry.coupon_change(asked.coupon, adding, asked.on, book, now=now)

        return vary

    def grant(body: bytes) -> Operation:
        asked = _decoded(body, FeatureGrant)
        fields = msgspec.structs.asdict(asked)
        on, until = fields.pop("on"), fields.pop("until")
        try:
            entitlement = Entitlement.model_validate(
                {name: value for name, value in fields.items() if value is not None}
            )
        except ValidationError as error:
            raise LifecycleError(error.errors()[0]["msg"]) from None
        return registry.feature_grant(entitlement, on, until, book, now=now)

    def revoke(body: bytes) -> Operation:
        asked = _decoded(body, FeatureRevocation)
        return registry.feature_revocation(asked.feature, asked.on, now=now)

    def cancel(body: bytes) -> Operation:
        asked = _decoded(body, Cancellation)
        at = asked.at if asked.at is None or asked.at.tzinfo else asked.at.replace(tzinfo=UTC)
        return registry.cancellation(at, asked.at_period_end, now=now)

    def renew(body: bytes) -> Operation:
        _decoded(body, Renewal)
        return registry.renewal()

    return {"change": change, "add-charge": add_on(True), "remove-charge": add_on(False),
            "revise": revise, "add-coupon": coupon(True), "remove-coupon": coupon(False),
            "grant-feature": grant, "revoke-feature": revoke,
            "cancel": cancel, "renew": renew}  # fmt: skip


def _decoded(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.DecodeError as error:
        raise _RefusedError(400, "Bad Request", f"the body: {error}") from None


def _imported(request: RegistryRequest, book: PriceBook) -> list[Subscription]:
    def parse(source: str, items: Sequence[tuple[int, NewSubscription]]) -> list[Subscription]:
        return subscriptions_from(source, items, book)

    return _checked_items(request, NewSubscription, "subscriptions", parse)


def _checked_items(
    request: RegistryRequest,
    kind: type[Item],
    noun: str,
    parse: Callable[[str, Sequence[tuple[int, Item]]], list[Parsed]],
) -> list[Parsed]:
    """The body's object, or array of objects, of ``kind``, for the key's tenant, checked
    as a file's rows are."""
    try:
        sent = msgspec.json.decode(request.body or b"null", type=list[kind] | kind)  # type: ignore[valid-type]
    except msgspec.DecodeError as error:
        raise _RefusedError(400, "Bad Request", f"the body: {error}") from None
    items = sent if isinstance(sent, list) else [sent]
    if not items:
        raise _RefusedError(400, "Bad Request", f"send one of the {noun} or an array of them")
    if len(items) > MAX_IMPORT:
        raise _RefusedError(
            413, "Content Too Large", f"{len(items)} {noun}; send at most {MAX_IMPORT} per request"
        )
    for number, item in enumerate(items, start=1):
        if item.tenant not in ("", request.tenant):
            raise _RefusedError(
                403, "Forbidden",
                f"item {number} names tenant {item.tenant!r}; this key acts for "
                f"{request.tenant!r}",
            )  # fmt: skip
    rows = [(number, msgspec.structs.replace(item, tenant=request.tenant))
            for number, item in enumerate(items, start=1)]  # fmt: skip
    try:
        return parse("the request", rows)
    except SubscriptionFileError as error:
        raise _RefusedError(422, "Unprocessable Content", str(error)) from None


def _of_customer(store: SubscriptionStore, tenant: str, named: str) -> list[Subscription]:
    """The subscriptions of the customer ``named`` by its id (a subscription names its
    customer whether or not the customer was imported), or by its external id (another
    system's, such as Stripe's ``cus_...``)."""
    ids = [named] + [c.customer for c in store.customers(tenant).values()
                     if c.external_id == named and c.customer != named]  # fmt: skip
    return [row for customer in ids for row in store.subscriptions(tenant, customer=customer)]


def _customer(customer: Customer) -> CustomerView:
    return CustomerView(customer.customer, customer.name, customer.tax_rate,
                        customer.external_id, customer.currency, customer.address,
                        customer.tax_id, customer.payment_terms_days, customer.country,
                        customer.region, customer.tax_exempt)  # fmt: skip


def _detail(
    store: SubscriptionStore, tenant: str, subscription: str, today: datetime
) -> SubscriptionDetail:
    row = store.subscription(tenant, subscription)
    if row is None:
        raise _RefusedError(
            404, "Not Found", f"no subscription {subscription!r} for tenant {tenant!r}"
        )
    history = [HistoryEntry(c.recorded_at, c.kind, c.effective_at, c.plan, c.detail)
               for c in store.history(tenant, subscription)]  # fmt: skip
    final = store.finalized_through(tenant, subscription)
    shown = view(row, today)
    return SubscriptionDetail(**msgspec.structs.asdict(shown), history=history,
                              finalized_through=f"{final:%Y-%m}" if final else None)  # fmt: skip


def view(row: Subscription, now: datetime) -> SubscriptionView:
    started = PlanFrom(row.started_at.astimezone(UTC).date(), row.plan, row.started_at)
    return SubscriptionView(
        row.tenant, row.subscription, row.customer, row.plan_at(now),
        row.started_at, row.ended_at, row.anchor_day,
        [started, *(PlanFrom(at.date(), plan, at) for at, plan in row.changes)],
        [CouponFrom(c.coupon, c.day, c.ended) for c in row.coupons],
        [FeatureFrom(f.feature, f.day, f.ended, f.entitlement) for f in row.features],
    )  # fmt: skip
