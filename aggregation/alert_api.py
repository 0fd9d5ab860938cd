"""The alert rules handler (``aggregation.handlers.ALERTS``): list, add and remove a
tenant's rules. A rule is stored; every worker reads rules changed within a second
(``alerts.RELOAD_SECONDS``) and judges it from its next batch on."""

from __future__ import annotations

import re
import secrets

import msgspec

from aggregation.alert_store import AlertStore
from aggregation.alerts import AlertRule, check
from aggregation.handlers import AlertAsk, Answer, problem
from base.clickhouse import Connection
from base.settings import Settings
from rating.plans import IDENTIFIER, PriceBook

_ask = msgspec.json.Decoder(AlertAsk)


def answer_alerts(connection: Connection, book: PriceBook, settings: Settings, body: bytes) -> (
    Answer
):  # fmt: skip
    """200 with the rules, 201 with a rule made, 404 for a rule the tenant does not have,
    422 with why a rule cannot be judged."""
    try:
        asked = _ask.decode(body)
    except msgspec.ValidationError as error:
        return problem(400, "Bad Request", f"not an alerts request: {error}")
    store = AlertStore(connection)
    if asked.action == "list":
        rules = [msgspec.to_builtins(r) for r in store.rules(asked.tenant)]
        return Answer(200, "application/json", msgspec.json.encode({"rules": rules}))
    if asked.action == "add":
        rule = AlertRule(asked.tenant, asked.id or f"al_{secrets.token_hex(6)}", asked.scope,
                         asked.target, asked.metric, asked.threshold, asked.meter,
                         asked.feature)  # fmt: skip
        why = check(rule, book)
        if why is None and not re.match(IDENTIFIER, rule.id):
            why = f"rule id {rule.id!r} is not an identifier"
        if why is None and not rule.target:
            why = "a rule has a target: the subscription or plan it watches"
        if why:
            return problem(422, "Unprocessable Content", why)
        made = store.write_rule(rule)
        return Answer(201, "application/json", msgspec.json.encode(made))
    if asked.action == "remove":
        known = {r.id: r for r in store.rules(asked.tenant)}
        if asked.id not in known:
            return problem(404, "Not Found", f"no alert rule {asked.id!r}")
        store.write_rule(msgspec.structs.replace(known[asked.id], removed=True))
        return Answer(200, "application/json", msgspec.json.encode({"removed": asked.id}))
    return problem(400, "Bad Request", f"action is list, add or remove, not {asked.action!r}")
