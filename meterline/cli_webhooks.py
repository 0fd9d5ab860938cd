"""``meterline webhooks``, ``meterline alerts`` and ``meterline entitlements``: a tenant's
webhook endpoints and their deliveries, its usage alert rules, and what a subscription
may use now. Each asks the same handler the HTTP API does (``aggregation.handlers``), so
both answer alike."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from meterline.cli_support import (
    console,
    fail,
    format_option,
    handlers,
    load_book,
    load_settings,
    opened_store,
    print_rows,
)


def _asked(name: str, request: Any) -> Any:
    """The handler's answer to ``request`` (a msgspec struct), or a failure with its reason."""
    import msgspec

    settings = load_settings()
    book = load_book(settings)
    with opened_store(settings) as connection:
        answer = handlers()[name](connection, book, settings, msgspec.json.encode(request))
    said = json.loads(answer.body)
    if answer.status >= 400:
        fail(said.get("detail", said))
    return said


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook endpoints: signed deliveries of alerts, invoices, subscription changes and
    credits, retried for about three days (docs/webhooks.md)."""


@webhooks_group.command("add")
@click.argument("url")
@click.option("--tenant", required=True)
@click.option(
    "--type",
    "types",
    multiple=True,
    help="An event type it takes (repeat for more).  [default: every type]",
)
def add_endpoint(url: str, tenant: str, types: tuple[str, ...]) -> None:
    """Add an endpoint; its signing secret is printed this once."""
    from aggregation.handlers import WEBHOOK_ENDPOINTS, WebhookAsk

    made = _asked(WEBHOOK_ENDPOINTS, WebhookAsk("add", tenant, url, list(types)))
    console.print(f"endpoint {made['endpoint']} → {made['url']} ({', '.join(made['types'])})")
    console.print(f"signing secret (shown once): {made['secret']}", highlight=False)


@webhooks_group.command("list")
@click.option("--tenant", required=True)
@format_option
def list_endpoints(tenant: str, fmt: str) -> None:
    """The tenant's endpoints."""
    from aggregation.handlers import WEBHOOK_ENDPOINTS, WebhookAsk

    found = _asked(WEBHOOK_ENDPOINTS, WebhookAsk("list", tenant))["endpoints"]
    print_rows(f"webhook endpoints of {tenant}", ["endpoint", "url", "types", "created_at"],
               [[e["endpoint"], e["url"], " ".join(e["types"]), e["created_at"]]
                for e in found], fmt)  # fmt: skip


@webhooks_group.command("remove")
@click.argument("endpoint")
@click.option("--tenant", required=True)
def remove_endpoint(endpoint: str, tenant: str) -> None:
    """Remove an endpoint: nothing more is sent to it."""
    from aggregation.handlers import WEBHOOK_ENDPOINTS, WebhookAsk

    _asked(WEBHOOK_ENDPOINTS, WebhookAsk("remove", tenant, endpoint=endpoint))
    console.print(f"removed {endpoint}")


@webhooks_group.command("deliveries")
@click.option("--tenant", required=True)
@click.option("--message", default="", help="Only this message's deliveries.")
@format_option
def deliveries(tenant: str, message: str, fmt: str) -> None:
    """The deliveries of the last four days: their state and every attempt."""
    from aggregation.handlers import WEBHOOK_ENDPOINTS, WebhookAsk

    found = _asked(WEBHOOK_ENDPOINTS, WebhookAsk("attempts", tenant, message=message))
    rows = [[d["message"], d["type"], d["endpoint"], d["state"], len(d["attempts"]),
             d["attempts"][-1]["detail"] if d["attempts"] else ""]
            for d in found["deliveries"]]  # fmt: skip
    print_rows(f"webhook deliveries of {tenant}",
               ["message", "type", "endpoint", "state", "attempts", "last"], rows, fmt)  # fmt: skip


@webhooks_group.command("replay")
@click.argument("message")
@click.option("--tenant", required=True)
@click.option("--endpoint", default="", help="Only to this endpoint.  [default: every one]")
def replay_message(message: str, tenant: str, endpoint: str) -> None:
    """Deliver a message again, with the same id, whatever became of it (a failed one
    gets a new round of attempts)."""
    from aggregation.handlers import WEBHOOK_ENDPOINTS, WebhookAsk

    said = _asked(WEBHOOK_ENDPOINTS,
                  WebhookAsk("replay", tenant, endpoint=endpoint, message=message))  # fmt: skip
    console.print(f"{message}: {said['deliveries']} deliveries to make on the next run")


@webhooks_group.command("deliver")
@click.option(
    "--every",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Keep delivering, a run every so many seconds, until Ctrl-C.  [default: one run]",
)
def deliver_due(every: float | None) -> None:
    """Make the deliveries due now (what `meterline serve` does every second): messages
    from what the store recorded since the last run, and retries."""
    import asyncio

    import msgspec

    from aggregation.handlers import DELIVERED, WEBHOOKS, Outcomes, Outgoing
    from ingest.gateway import deliver

    settings = load_settings()
    book = load_book(settings)
    answer, record = handlers()[WEBHOOKS], handlers()[WEBHOOKS + DELIVERED]
    with opened_store(settings) as connection:
        while True:
            said = json.loads(answer(connection, book, settings, b"").body)
            due = msgspec.convert(said["deliveries"], list[Outgoing])

            async def send(due: list[Outgoing] = due) -> list[Any]:
                return list(await asyncio.gather(*(deliver(d) for d in due)))

            outcomes = asyncio.run(send()) if due else []
            if outcomes:
                record(connection, book, settings, msgspec.json.encode(Outcomes(outcomes)))
            made = sum(200 <= o.status < 300 for o in outcomes)
            console.print(f"{len(due)} due, {made} delivered, {len(due) - made} to retry")
            if every is None:
                return
            time.sleep(every)


@click.group("alerts")
def alerts_group() -> None:
    """Usage alert rules: a threshold on a meter's quantity, an amount, or a percentage of
    an entitlement's limit, judged in the stream; each crossing fires once per period."""


@alerts_group.command("add")
@click.option("--tenant", required=True)
@click.option("--id", "rule_id", default="", help="The rule's id.  [default: one made up]")
@click.option("--subscription", default="", help="Watch this subscription.")
@click.option("--plan", default="", help="Watch every subscription on this plan.")
@click.option(
    "--metric",
    type=click.Choice(["quantity", "amount", "percent", "credit_balance"]),
    required=True,
)
@click.option(
    "--threshold",
    required=True,
    help="In the meter's units (quantity), the plan's currency (amount, credit_balance), or "
    "percent.",
)
@click.option("--meter", default="", help="quantity and amount: the meter (amount: all if none).")
@click.option("--feature", default="", help="percent: the metered entitlement.")
def add_rule(tenant: str, rule_id: str, subscription: str, plan: str, metric: str,
             threshold: str, meter: str, feature: str) -> None:  # fmt: skip
    """Add a rule (or replace the one with this --id)."""
    from aggregation.handlers import ALERTS, AlertAsk

    if bool(subscription) == bool(plan):
        fail("give one of --subscription and --plan")
    scope, target = ("subscription", subscription) if subscription else ("plan", plan)
    made = _asked(ALERTS, AlertAsk("add", tenant, rule_id, scope, target, metric, threshold,
                                   meter, feature))  # fmt: skip
    console.print(f"alert rule {made['id']}: {metric} {threshold} on {scope} {target}")


@alerts_group.command("list")
@click.option("--tenant", required=True)
@format_option
def list_rules(tenant: str, fmt: str) -> None:
    """The tenant's rules."""
    from aggregation.handlers import ALERTS, AlertAsk

    rules = _asked(ALERTS, AlertAsk("list", tenant))["rules"]
    print_rows(f"alert rules of {tenant}",
               ["id", "scope", "target", "metric", "threshold", "meter", "feature"],
               [[r["id"], r["scope"], r["target"], r["metric"], r["threshold"], r["meter"],
                 r["feature"]] for r in rules], fmt)  # fmt: skip


@alerts_group.command("remove")
@click.argument("rule_id")
@click.option("--tenant", required=True)
def remove_rule(rule_id: str, tenant: str) -> None:
    """Remove a rule: it fires no more."""
    from aggregation.handlers import ALERTS, AlertAsk

    _asked(ALERTS, AlertAsk("remove", tenant, rule_id))
    console.print(f"removed {rule_id}")


@click.command("entitlements")
@click.argument("subscription")
@click.option("--tenant", required=True)
@click.option("--feature", default=None, help="Only this feature.")
@format_option
def entitlements_command(subscription: str, tenant: str, feature: str | None, fmt: str) -> None:
    """What a subscription may use now, from the stored totals (`meterline serve` answers
    GET /v1/entitlements from the worker's live usage)."""
    import asyncio

    from ingest.store_access import DirectStore, StoreUnavailableError

    settings = load_settings()
    store = DirectStore(settings, load_book(settings))
    try:
        found = asyncio.run(store.entitlements(tenant, subscription, feature))
    except StoreUnavailableError as error:
        fail(f"{error} (with the embedded engine, is a worker or `meterline serve` running?)")
    finally:
        asyncio.run(store.close())
    if found is None:
        fail(f"no subscription {subscription!r} for tenant {tenant!r}")
    rows = [[f.feature, f.kind, "yes" if f.has_access else "no", f.usage or "", f.limit or "",
             f.balance or "", f.reason] for f in found.features]  # fmt: skip
    columns = ["feature", "kind", "access", "usage", "limit", "balance", "reason"]
    print_rows(f"{tenant}/{subscription} on {found.plan}, {found.period}", columns, rows, fmt)
