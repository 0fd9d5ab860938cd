"""Answers that need a stage above the pipeline, handed down by the commands: the gateway
and the worker that holds chDB serve them without importing them (invoicing's
corrections, the customer portal). Each takes the store a process opened, its price book
and settings, and a request's bytes; the gateway checks who asks before it calls one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import msgspec

from base.clickhouse import Connection
from base.problems import ProblemDocument
from base.settings import Settings
from rating.plans import PriceBook

# A correction (``corrections.CorrectionRequest``); a portal page (its path after
# /portal/); a portal link made (``PortalLink``); a dunning run (no body).
CORRECTIONS, PORTAL, PORTAL_LINK, DUNNING = "corrections", "portal", "portal-link", "dunning"
PAYMENTS = "payments"  # a payment received, or an attempt that failed (``PaymentReport``)
CREDITS = "credits"  # prepaid credits: list with balances and history, or grant (``GrantAsk``)
WEBHOOKS = "webhooks"  # a delivery run (no body): the deliveries due, to make and report
WEBHOOK_ENDPOINTS = "webhook-endpoints"  # endpoints and attempts (``WebhookAsk``)
ALERTS = "alerts"  # alert rules: list, add, remove (``AlertAsk``)
# A handler may answer deliveries to make ({"deliveries": [Outgoing, ...], ...}): the
# gateway makes them, since whoever holds the store must not wait on a receiver, and
# reports the outcomes to the handler named ``name + DELIVERED``.
DELIVERED = "-delivered"


class Outgoing(msgspec.Struct, frozen=True):
    key: str  # what the handler knows the delivery by
    url: str
    headers: dict[str, str]
    body: str


class Outcome(msgspec.Struct, frozen=True):
    key: str
    status: int  # the receiver's HTTP status, 0 when it could not be reached
    why: str = ""


class Outcomes(msgspec.Struct, frozen=True):
    outcomes: list[Outcome]


# The header the worker's internal page sets on a handler's answer, whatever its status:
# a 404 from the handler (no such invoice) is not a 404 of the page.
HANDLED = "x-meterline-handled"


class Answer(NamedTuple):
    status: int
    media_type: str
    body: bytes


def problem(status: int, title: str, detail: str) -> Answer:
    """A handler's refusal, as the gateway answers every error: a problem document."""
    found = ProblemDocument(title, status, detail)
    return Answer(status, "application/problem+json", msgspec.json.encode(found))


class PortalLink(msgspec.Struct, frozen=True):
    """A customer's portal link to make, valid for ``days``."""

    tenant: str
    customer: str
    days: int = 7


class PaymentReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a payment provider (or a person) reports of an invoice, by its id or number:
    a payment received (``amount``), or an attempt that failed (``failed`` with a reason).
    ``tenant`` is the key's."""

    invoice: str
    amount: str = ""  # a decimal string, in the invoice's currency
    received_on: str = ""  # YYYY-MM-DD; today by default
    reference: str = ""
    failed: bool = False
    reason: str = ""
    tenant: str = ""


class GrantAsk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A grant of prepaid credit asked over HTTP (amounts as decimal strings); with no
    ``amount``, the tenant's grants are listed (of ``customer``, if given)."""

    customer: str = ""
    amount: str = ""
    currency: str = ""
    reason: str = ""
    subscription: str = ""
    priority: int = 0
    effective_from: str = ""  # YYYY-MM-DD; today by default
    expires_on: str = ""
    price: str = ""  # a paid grant's price; "" for a free one
    meter: str = ""  # a grant in this meter's units (``amount`` is units); "": in currency
    tenant: str = ""  # the key's


class WebhookAsk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An admin's request about a tenant's webhooks: ``action`` is list, add (``url``,
    ``types``), remove (``endpoint``), attempts (of ``message``, or every recent one) or
    replay (``message``, to ``endpoint`` or every one that takes it)."""

    action: str = ""  # over HTTP, the gateway's (from the method and path)
    tenant: str = ""  # the key's
    url: str = ""
    types: list[str] = []
    endpoint: str = ""
    message: str = ""


class AlertAsk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An admin's request about a tenant's alert rules: ``action`` list, add (the rule's
    fields, as ``aggregation.alerts.AlertRule``) or remove (``id``)."""

    action: str = ""  # over HTTP, the gateway's (from the method and path)
    tenant: str = ""  # the key's
    id: str = ""
    scope: str = "subscription"
    target: str = ""
    metric: str = ""
    threshold: str = ""
    meter: str = ""
    feature: str = ""


Handler = Callable[[Connection, PriceBook, Settings, bytes], Answer]
Handlers = Mapping[str, Handler]  # by name: the names above
