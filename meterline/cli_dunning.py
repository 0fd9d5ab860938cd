"""``meterline dunning``: each tenant's schedule of reminders and payment retries for
unpaid invoices, running it, and the events it emitted for the payment provider or
mailer (docs/payments.md)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from invoicing.dunning import Policy, Step

from meterline.cli_support import (
    console,
    errors,
    fail,
    format_option,
    load_settings,
    opened_store,
    print_rows,
)


@click.group()
def dunning() -> None:
    """Dunning: reminders and payment retries for unpaid invoices, on a schedule."""


@dunning.command("policy")
@click.option("--tenant", required=True)
@click.option("--steps", default=None,
              help="DAYS:ACTION after the due day, ACTION reminder or retry: "
              '"1:reminder,3:retry,7:reminder,14:retry" (the default).')  # fmt: skip
@click.option(
    "--final",
    default=None,
    help='A final action on a day of its own: "21:cancel_at_period_end", or "none".',
)
@click.option("--webhook", default=None,
              help="Where each event is POSTed (the provider's or mailer's endpoint); "
              '"" to keep events in the outbox.')  # fmt: skip
@click.option("--new-secret", is_flag=True, help="Sign events with a new secret.")
def set_policy(tenant: str, steps: str | None, final: str | None, webhook: str | None,
               new_secret: bool) -> None:  # fmt: skip
    """Set the tenant's dunning policy (what is not given is kept). Events are signed:
    X-Meterline-Signature is sha256=HMAC-SHA256(secret, body); the secret is printed
    when one is made."""
    from msgspec import structs

    from invoicing.dunning import FINAL_ACTIONS, PolicyError, Step, parse_steps
    from invoicing.dunning_ledger import DunningLedger

    with opened_store(load_settings()) as connection:
        kept = DunningLedger(connection)
        policy = kept.policy(tenant)
        try:
            if steps is not None:
                policy = structs.replace(policy, steps=parse_steps(steps))
            if final is not None:
                policy = structs.replace(policy, final=_final(final, FINAL_ACTIONS, Step))
            last = policy.steps[-1].day
            if policy.final is not None and policy.final.day <= last:
                raise PolicyError(f"the final action comes after the last step (day {last})")
        except PolicyError as error:
            fail(str(error))
        if webhook is not None:
            if webhook and not webhook.startswith(("https://", "http://")):
                fail(f"--webhook {webhook!r} is not an http(s) URL")
            policy = structs.replace(policy, webhook=webhook)
        made = new_secret or (policy.webhook and not policy.secret)
        if made:
            policy = structs.replace(policy, secret=secrets.token_urlsafe(24))
        kept.set_policy(tenant, policy)
    _show(tenant, policy)
    if made:
        errors.print(f"signing secret (shown once): {policy.secret}")


def _final(text: str, actions: tuple[str, ...], step: type[Step]) -> Step | None:
    from invoicing.dunning import PolicyError

    if text == "none":
        return None
    day, _, action = text.partition(":")
    if not day.isdigit() or action not in actions:
        raise PolicyError(f"--final {text!r}: give DAYS:{'|'.join(actions)}, or none")
    return step(int(day), action)


def _show(tenant: str, policy: Policy) -> None:
    steps = ", ".join(f"day {s.day}: {s.action}" for s in policy.all_steps())
    where = policy.webhook or "the outbox (no webhook)"
    console.print(f"{tenant}: {steps}; events to {where}", highlight=False)


@dunning.command("show")
@click.option("--tenant", required=True)
def show_policy(tenant: str) -> None:
    """The tenant's dunning policy (the default one until it is set)."""
    from invoicing.dunning_ledger import DunningLedger

    with opened_store(load_settings()) as connection:
        _show(tenant, DunningLedger(connection).policy(tenant))


@dunning.command("run")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@click.option("--today", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The day to run as.  [default: today]")  # fmt: skip
def run(tenant: str | None, today: datetime | None) -> None:
    """Take every step due for every unpaid invoice and deliver its events. Running it
    again the same day takes no step twice; an event not delivered is tried again."""
    from invoicing.dunning_ledger import DunningLedger
    from invoicing.dunning_run import run_dunning
    from invoicing.payment_ledger import PaymentLedger
    from invoicing.sources import Sources
    from meterline.cli_registry import publish

    settings = load_settings()
    day = today.date() if today else datetime.now(UTC).date()
    with opened_store(settings) as connection:
        report = run_dunning(Sources.over(connection), PaymentLedger(connection),
                             DunningLedger(connection), day, tenant=tenant)  # fmt: skip
    publish(settings, report.cancelled)
    for action in report.taken:
        console.print(f"{action.tenant}/{action.invoice_id}: step {action.step + 1}, "
                      f"{action.action}", highlight=False)  # fmt: skip
    for row in report.cancelled:
        console.print(f"{row.tenant}/{row.subscription}: cancelled at the end of its period")
    for line in [*report.undelivered, *report.problems]:
        errors.print(f"[yellow]{line}[/]", highlight=False)
    console.print(f"{day}: {len(report.taken):,} steps taken, {report.delivered:,} events "
                  "delivered")  # fmt: skip


@dunning.command("events")
@click.option("--tenant", default=None, help="Only this tenant.  [default: all]")
@format_option
def list_events(tenant: str | None, fmt: str) -> None:
    """Every step taken: the outbox of events, delivered or waiting."""
    from invoicing.dunning_ledger import DunningLedger

    with opened_store(load_settings()) as connection:
        found = DunningLedger(connection).actions(tenant)
    print_rows("Dunning events", ("tenant", "invoice", "step", "action", "created_at",
                                  "delivered_at", "attempts"),
               [(a.tenant, a.invoice_id, a.step + 1, a.action, a.created_at.isoformat(),
                 a.delivered_at.isoformat() if a.delivered_at else "", a.attempts)
                for a in found], fmt)  # fmt: skip
