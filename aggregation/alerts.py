"""Usage alerts, judged in the stream as totals change: a rule's threshold on a meter's
quantity, on an amount, on a percentage of an entitlement's limit, or on a prepaid credit
balance, for one subscription or every subscription on a plan. A rule fires when a batch
takes the value from below its threshold to at or past it (a credit balance: from above
it to at or below it): once per billing period.

Why a crossing fires once, replays and crashes included: its id is a digest of (tenant,
subscription, rule, rule version, period), the store keeps one row per id, and the
batch's crossings are written before its totals. So a batch whose totals did not become
durable finds the same crossing again when it is replayed, and one whose totals did no
longer sees a crossing at all (its value was past the threshold before the replay).

Plain logic, no I/O: the rules come from ``alert_store``.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal

import msgspec

from aggregation.live import Held, LiveUsage, Owner, combined
from aggregation.model import Crossing, RatedRows, TotalKey
from rating.money import from_nanos
from rating.plans import PriceBook
from rating.variants import parse

QUANTITY, AMOUNT, PERCENT = "quantity", "amount", "percent"
# A prepaid credit balance less what the period has rated so far: it falls, so it fires
# when a batch takes it from above the threshold to at or below it.
CREDIT_BALANCE = "credit_balance"
METRICS = (QUANTITY, AMOUNT, PERCENT, CREDIT_BALANCE)
# A subscription's prepaid credit as its current period began: (currency, balance), or
# None without any (``invoicing.grant_ledger.CreditBalances``).
CreditOf = Callable[[tuple[str, str]], tuple[str, Decimal] | None]
SUBSCRIPTION, PLAN = "subscription", "plan"
RELOAD_SECONDS = 1.0  # how often the worker reads rules changed since its last look


class AlertRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``threshold``: in the meter's units (quantity), the plan's currency (amount: of the
    meter, or of every meter when none is named), percent of the limit (percent), or the
    credit's currency (credit_balance: prepaid credit less what the period rated)."""

    tenant: str
    id: str
    scope: str  # subscription or plan
    target: str  # the subscription's id, or the plan's (its variants included)
    metric: str  # quantity, amount or percent
    threshold: str  # a decimal string
    meter: str = ""
    feature: str = ""  # percent: the metered entitlement whose limit it is a share of
    version: int = 0
    removed: bool = False


def check(rule: AlertRule, book: PriceBook) -> str | None:
    """Why the rule cannot be judged, if it cannot."""
    if rule.scope not in (SUBSCRIPTION, PLAN):
        return f"scope is subscription or plan, not {rule.scope!r}"
    if rule.metric not in METRICS:
        return f"metric is one of {', '.join(METRICS)}, not {rule.metric!r}"
    try:
        threshold = Decimal(rule.threshold)
    except ArithmeticError:
        return f"threshold {rule.threshold!r} is not a decimal number"
    if (
        not threshold.is_finite()
        or threshold < 0
        or (threshold == 0 and rule.metric != CREDIT_BALANCE)
    ):
        return f"threshold {rule.threshold!r} is not a positive number"
    known = {meter.id for meter in book.meters}
    if rule.metric == QUANTITY and rule.meter not in known:
        return f"a quantity alert names a meter of the price book, not {rule.meter!r}"
    if rule.metric == AMOUNT and rule.meter and rule.meter not in known:
        return f"meter {rule.meter!r} is not in the price book"
    if rule.metric == PERCENT and not rule.feature:
        return "a percent alert names the metered entitlement (feature) it is a share of"
    if rule.scope == PLAN and not book.knows(rule.target):
        return f"plan {rule.target!r} is not in the price book"
    return None


def crossing_id(rule: AlertRule, subscription: str, period: date) -> str:
    said = f"{rule.tenant}\x1f{subscription}\x1f{rule.id}\x1f{rule.version}\x1f{period}"
    return hashlib.sha256(said.encode()).hexdigest()[:32]


class AlertRules:
    """The rules in force, read again from the store every ``RELOAD_SECONDS``."""

    def __init__(
        self,
        load: Callable[[int], Iterable[AlertRule]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``load(version)`` returns the rules written with a version above it."""
        self._load = load
        self._clock = clock
        self._rules: dict[tuple[str, str], AlertRule] = {}
        self._by_target: dict[tuple[str, str, str], list[AlertRule]] = {}
        self._version = -1
        self._next = 0.0

    def __bool__(self) -> bool:
        self._fresh()
        return bool(self._rules)

    def _fresh(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + RELOAD_SECONDS
        changed = False
        for rule in self._load(self._version):
            self._version = max(self._version, rule.version)
            known = self._rules.get((rule.tenant, rule.id))
            if known is None or rule.version >= known.version:
                changed = True
                if rule.removed:
                    self._rules.pop((rule.tenant, rule.id), None)
                else:
                    self._rules[rule.tenant, rule.id] = rule
        if changed:
            by_target: dict[tuple[str, str, str], list[AlertRule]] = defaultdict(list)
            for rule in self._rules.values():
                by_target[rule.tenant, rule.scope, rule.target].append(rule)
            self._by_target = dict(by_target)

    def of(self, owner: Owner, plan: str) -> list[AlertRule]:
        """The rules of a subscription on ``plan`` (a variant: its list plan's too)."""
        self._fresh()
        tenant, subscription = owner
        found = [*self._by_target.get((tenant, SUBSCRIPTION, subscription), ()),
                 *self._by_target.get((tenant, PLAN, plan), ())]  # fmt: skip
        base = parse(plan).base
        if base != plan:
            found += self._by_target.get((tenant, PLAN, base), ())
        return found


def crossings(
    rules: AlertRules,
    live: LiveUsage,
    rated: RatedRows,
    book: PriceBook,
    now: datetime,
    *,
    credit_of: CreditOf | None = None,
) -> list[Crossing]:
    """The crossings a batch's rated totals make, judged against the live usage before
    the batch (``live`` takes the batch in only once it is durable)."""
    if not rated or not rules:
        return []
    touched: dict[tuple[Owner, date], dict[TotalKey, Held]] = defaultdict(dict)
    for key, quantity, amount, currency, partition in zip(
        rated.keys, rated.quantities, rated.amounts_nanos, rated.currencies, rated.partitions,
        strict=True,
    ):  # fmt: skip
        touched[(key.tenant, key.subscription), key.period_start][key] = Held(
            quantity, amount, currency, partition
        )
    found = []
    for (owner, period), changed in touched.items():
        newest = max(changed)  # its plan: the one the latest part is rated under
        applying = rules.of(owner, newest.plan)
        if not applying:
            continue
        before = dict(live.totals(owner, period))
        after = {**before, **changed}
        partition = next(iter(changed.values())).partition
        credit = credit_of(owner) if credit_of is not None else None
        for rule in applying:
            threshold = Decimal(rule.threshold)
            if rule.metric == CREDIT_BALANCE:
                was, now_at = _left(credit, before), _left(credit, after)
                crossed = was is not None and now_at is not None and now_at <= threshold < was
            else:
                was = _value(rule, before, book, newest)
                now_at = _value(rule, after, book, newest)
                crossed = was is not None and now_at is not None and was < threshold <= now_at
            if crossed and now_at is not None:
                found.append(Crossing(
                    crossing_id(rule, owner[1], period), rule.tenant, owner[1], rule.id,
                    rule.version, period, rule.metric, threshold, now_at, now, partition,
                ))  # fmt: skip
    return found


def _left(credit: tuple[str, Decimal] | None, totals: dict[TotalKey, Held]) -> Decimal | None:
    """The credit as the period began less what its totals in that currency rate so far."""
    if credit is None:
        return None
    currency, balance = credit
    spent = sum(h.amount_nanos for h in totals.values() if h.currency == currency)
    return balance - from_nanos(spent)


def _value(
    rule: AlertRule, totals: dict[TotalKey, Held], book: PriceBook, newest: TotalKey
) -> Decimal | None:
    """The rule's measure of a subscription's period; None when it has none (a percent of
    a feature its plan does not limit)."""
    if rule.metric == AMOUNT:
        parts = [(k, h) for k, h in totals.items() if not rule.meter or k.meter == rule.meter]
        return from_nanos(sum(h.amount_nanos for _, h in parts))
    meter_id = rule.meter
    limit = None
    if rule.metric == PERCENT:
        plan = book.plan(newest.plan, newest.plan_version)
        given = next((e for e in plan.entitlements if e.feature == rule.feature), None)
        if given is None or given.meter is None or not given.limit:
            return None
        meter_id, limit = given.meter, given.limit
    meter = book.meter(meter_id)
    used = combined(((k, h) for k, h in totals.items() if k.meter == meter_id),
                    meter.aggregation).quantity  # fmt: skip
    quantity = Decimal(used).scaleb(-meter.scale)
    return quantity if limit is None else quantity * 100 / limit
