"""Dunning: what to do, and when, about an invoice that is not paid by its due day. Pure.

A tenant's policy is a schedule of steps, each a number of days after the due day and an
action: a ``reminder`` (for the tenant's mailer) or a ``retry`` (for its payment
provider: charge again); then, optionally, a final action (``cancel_at_period_end``) on
a day of its own. Each step is taken once per invoice, when a run finds the invoice still
unpaid (due, overdue, partially paid or failed) that many days after its due day; a paid
or written-off invoice is left alone. Every step taken is an event, in the shape
``event_of`` gives (docs/payments.md), which the run delivers to the policy's webhook.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any

import msgspec

from invoicing.payments import PAID, WRITTEN_OFF, Standing

REMINDER, RETRY, CANCEL_AT_PERIOD_END = "reminder", "retry", "cancel_at_period_end"
ACTIONS = (REMINDER, RETRY)
FINAL_ACTIONS = (CANCEL_AT_PERIOD_END,)


class Step(msgspec.Struct, frozen=True):
    day: int  # after the due day
    action: str  # REMINDER or RETRY, or a final action


class Policy(msgspec.Struct, frozen=True):
    steps: tuple[Step, ...] = (Step(1, REMINDER), Step(3, RETRY), Step(7, REMINDER),
                               Step(14, RETRY))  # fmt: skip
    final: Step | None = None  # e.g. Step(21, CANCEL_AT_PERIOD_END)
    webhook: str = ""  # where events are POSTed; "": they wait in the outbox
    secret: str = ""  # signs each event's body (HMAC-SHA256), so the receiver can trust it

    def all_steps(self) -> tuple[Step, ...]:
        return (*self.steps, self.final) if self.final is not None else self.steps


class PolicyError(ValueError):
    """The policy cannot be set as given; the message says why."""


def parse_steps(text: str) -> tuple[Step, ...]:
    """ "1:reminder,3:retry,7:reminder" as steps, days rising."""
    steps = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        day, _, action = part.partition(":")
        if not day.strip().isdigit() or action.strip() not in ACTIONS:
            raise PolicyError(f"step {part!r}: give DAYS:ACTION, an action being one of "
                              f"{', '.join(ACTIONS)} (1:reminder)")  # fmt: skip
        steps.append(Step(int(day), action.strip()))
    days = [step.day for step in steps]
    if not steps or days != sorted(set(days)) or days[0] < 1:
        raise PolicyError("the steps' days are at least 1, each later than the one before")
    return tuple(steps)


def due_steps(held: Standing, policy: Policy, taken: set[int], today: date) -> list[int]:
    """The steps (indices of ``policy.all_steps()``) to take now for ``held``: those whose
    day has come, not taken yet, while the invoice is unpaid."""
    due_on = held.invoice.due_on
    if due_on is None or held.state in (PAID, WRITTEN_OFF):
        return []
    late = (today - due_on).days
    return [n for n, step in enumerate(policy.all_steps())
            if step.day <= late and n not in taken]  # fmt: skip


def event_of(held: Standing, policy: Policy, step: int, today: date, now: datetime) -> (
    dict[str, Any]
):  # fmt: skip
    """The event of taking ``step`` for ``held``: what a mailer or a payment provider needs
    to act on it, with an id that is the same however often it is delivered."""
    invoice, action = held.invoice, policy.all_steps()[step].action
    ident = hashlib.sha256(f"{invoice.tenant}|{invoice.invoice_id}|{step}".encode()).hexdigest()
    assert invoice.due_on is not None
    return {
        "id": f"DUN-{ident[:20].upper()}",
        "type": f"meterline.dunning.{action}",
        "tenant": invoice.tenant,
        "invoice_id": invoice.invoice_id,
        "invoice_number": invoice.number_label,
        "customer": invoice.customer,
        "customer_name": invoice.customer_name,
        "subscription": invoice.subscription,
        "currency": invoice.currency,
        "asked": str(held.asked),
        "outstanding": str(held.outstanding),
        "due_on": invoice.due_on.isoformat(),
        "days_overdue": (today - invoice.due_on).days,
        "step": step + 1,
        "action": action,
        "created_at": now.isoformat(),
    }
