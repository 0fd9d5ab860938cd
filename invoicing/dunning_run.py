"""A dunning run: take every step due today for every unpaid invoice, write each as an
action with its event (the outbox) before anything else, carry out final actions, then
deliver every event not delivered yet to its tenant's webhook. A run repeated takes no
step twice; an event whose delivery failed is delivered by a later run. Run it by
``meterline dunning run`` or let ``meterline serve`` run it (``dunning_interval_hours``).

Taking steps and delivering are apart (``take_steps``, ``pending``, ``record_deliveries``)
so that whoever holds the store never waits on a webhook: with chDB that is the worker,
whose stream must not stall, and ``serve``'s gateway delivers (``dunning_api``)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

import httpx
import msgspec

from invoicing.dunning import CANCEL_AT_PERIOD_END, Policy, due_steps, event_of
from invoicing.dunning_ledger import Action, DunningLedger
from invoicing.payment_ledger import PaymentLedger, standings
from invoicing.sources import Sources
from subscriptions import registry
from subscriptions.lifecycle import LifecycleError
from subscriptions.model import Subscription

log = logging.getLogger(__name__)

# (url, body, headers) -> the receiver's HTTP status; raises when it cannot be reached.
Post = Callable[[str, bytes, Mapping[str, str]], int]


def post_json(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    return httpx.post(url, content=body, headers=dict(headers), timeout=10).status_code


@dataclass
class DunningReport:
    taken: list[Action] = field(default_factory=list)
    delivered: int = 0
    undelivered: list[str] = field(default_factory=list)  # why, per event
    cancelled: list[Subscription] = field(default_factory=list)  # to publish to workers
    problems: list[str] = field(default_factory=list)


def run_dunning(
    sources: Sources,
    payments: PaymentLedger,
    dunning: DunningLedger,
    today: date,
    *,
    tenant: str | None = None,
    post: Post = post_json,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DunningReport:
    """Take today's steps, then deliver every event not delivered yet with ``post``."""
    report = take_steps(sources, payments, dunning, today, tenant=tenant, clock=clock)
    results = []
    for delivery in pending(dunning, tenant, report):
        try:
            status = post(delivery.url, delivery.body, delivery.headers)
        except httpx.HTTPError as error:
            results.append(delivery.result(0, type(error).__name__))
        else:
            results.append(delivery.result(status, f"it answered {status}"))
    record_deliveries(dunning, results, report)
    return report


def take_steps(
    sources: Sources,
    payments: PaymentLedger,
    dunning: DunningLedger,
    today: date,
    *,
    tenant: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DunningReport:
    """Every step due today for every unpaid invoice, written to the outbox, and final
    actions carried out; nothing is delivered."""
    now = clock()
    report = DunningReport()
    taken = dunning.taken(tenant)
    policies: dict[str, Policy] = {}
    for held in standings(sources.ledger, sources.credits, payments, tenant, today):
        invoice = held.invoice
        policy = policies.get(invoice.tenant) or policies.setdefault(
            invoice.tenant, dunning.policy(invoice.tenant)
        )
        for step in due_steps(held, policy, taken.get((invoice.tenant, invoice.invoice_id),
                                                      set()), today):  # fmt: skip
            event = msgspec.json.encode(event_of(held, policy, step, today, now))
            action = policy.all_steps()[step].action
            report.taken.append(Action(invoice.tenant, invoice.invoice_id, step, action, event,
                                       now, None, 0))  # fmt: skip
            if action == CANCEL_AT_PERIOD_END:
                _cancel(sources, invoice.tenant, invoice.subscription, now, report)
    dunning.write(report.taken)
    return report


def _cancel(sources: Sources, tenant: str, subscription: str, now: datetime,
            report: DunningReport) -> None:  # fmt: skip
    try:
        planned = registry.cancellation(None, True, now=now)
        report.cancelled.append(registry.perform(sources.subscriptions, tenant, subscription,
                                                 planned, now))  # fmt: skip
    except (LifecycleError, registry.UnknownSubscriptionError) as error:
        report.problems.append(f"{tenant}/{subscription}: not cancelled: {error}")


class Delivery(msgspec.Struct, frozen=True):
    """One event to POST: where, with which headers (signed), and which action it is."""

    tenant: str
    invoice_id: str
    step: int
    url: str
    headers: dict[str, str]
    body: bytes

    def result(self, status: int, why: str) -> Delivered:
        return Delivered(self.tenant, self.invoice_id, self.step, 200 <= status < 300, why)


class Delivered(msgspec.Struct, frozen=True):
    tenant: str
    invoice_id: str
    step: int
    ok: bool
    why: str = ""


def pending(dunning: DunningLedger, tenant: str | None, report: DunningReport) -> (
    list[Delivery]
):  # fmt: skip
    """Every event not delivered yet whose tenant has a webhook, signed with its secret;
    the others wait (``report`` says so)."""
    policies: dict[str, Policy] = {}
    found = []
    for action in dunning.actions(tenant):
        if action.delivered_at is not None:
            continue
        policy = policies.get(action.tenant) or policies.setdefault(
            action.tenant, dunning.policy(action.tenant)
        )
        if not policy.webhook:
            report.undelivered.append(f"{action.tenant}: no webhook: the event waits")
            continue
        headers = {"content-type": "application/json",
                   "x-meterline-event": f"meterline.dunning.{action.action}"}  # fmt: skip
        if policy.secret:
            digest = hmac.new(policy.secret.encode(), action.event, hashlib.sha256).hexdigest()
            headers["x-meterline-signature"] = f"sha256={digest}"
        found.append(Delivery(action.tenant, action.invoice_id, action.step, policy.webhook,
                              headers, action.event))  # fmt: skip
    return found


def record_deliveries(dunning: DunningLedger, results: list[Delivered],
                      report: DunningReport) -> None:  # fmt: skip
    """Mark what was delivered; count an attempt on the rest, which a later run retries."""
    outcome = {(r.tenant, r.invoice_id, r.step): r for r in results}
    done = []
    for action in dunning.actions():
        result = outcome.get((action.tenant, action.invoice_id, action.step))
        if result is None or action.delivered_at is not None:
            continue
        if result.ok:
            done.append(replace(action, delivered_at=datetime.now(UTC),
                                attempts=action.attempts + 1))  # fmt: skip
            report.delivered += 1
        else:
            done.append(replace(action, attempts=action.attempts + 1))
            where = f"{action.tenant}/{action.invoice_id} step {action.step + 1}"
            report.undelivered.append(f"{where}: {result.why}; a later run retries")
    dunning.write(done)
