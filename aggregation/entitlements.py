"""What a subscription may use now: each feature its plan (and add-ons) give, answered
from the worker's live usage (``live``) rather than a query, so that a product can ask on
every request. A metered feature's usage is its meter's period-to-date quantity; past a
soft limit it is billed as overage, past a hard one access is denied.

``Balances`` also keeps the set of (tenant, subscription, meter) over a hard limit, judged
again for each subscription a durable batch changes, and for the denied ones every so
often (a plan change lifts a cap): the gateway refuses further events of those meters
when it is configured to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from aggregation.live import SEVERAL, LiveUsage, Owner
from rating.money import trimmed
from rating.period import Period
from rating.plans import Entitlement, Plan, PriceBook, scaled
from rating.variants import VariantError, merged_entitlements
from subscriptions.model import Terms


class FeatureAccess(msgspec.Struct, omit_defaults=True):
    feature: str
    kind: str  # boolean, config or metered
    has_access: bool
    reason: str = ""  # why not, when it has none
    config: dict[str, Any] | None = None
    meter: str | None = None
    unit: str | None = None
    # Decimal strings in the meter's units: the period's usage, the limit, what is left of
    # it and what went past it.
    usage: str | None = None
    limit: str | None = None
    balance: str | None = None
    overage: str | None = None
    enforcement: str | None = None  # soft or hard


class EntitlementsAnswer(msgspec.Struct):
    tenant: str
    subscription: str
    plan: str
    period: str  # YYYY-MM, the label of the billing period it is in now
    as_of: str  # when the usage shown was last changed (ISO 8601, UTC)
    features: list[FeatureAccess]


class _Hard(NamedTuple):
    meter: str
    limit: int  # in the meter's scale


class Balances:
    def __init__(
        self,
        book: PriceBook,
        terms_of: Callable[[Sequence[Owner]], list[Terms | None]],
        live: LiveUsage,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._book = book
        # Each owner's terms, looked up for many at once (``SubscriptionDirectory.entries``).
        self._terms_of = terms_of
        self._plans: dict[tuple[str, date], Plan | None] = {}  # (plan id, day) -> in force
        self.live = live
        self._clock = clock
        self._aggregation = {meter.id: meter.aggregation for meter in book.meters}
        self._hard: dict[tuple[str, int], list[_Hard]] = {}  # per plan version
        # Subscriptions over a hard limit: their meters, and why.
        self.denied: dict[Owner, dict[str, str]] = {}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _plan(self, terms: Terms, now: datetime) -> Plan | None:
        key = (terms.plan_at(now), now.date())
        if key not in self._plans:
            self._plans[key] = self._book.plan_at(*key)
        return self._plans[key]

    def _given(self, plan: Plan | None, terms: Terms, day: date) -> tuple[Entitlement, ...]:
        """The plan's entitlements with what the subscription was given in force on
        ``day`` (merged as an add-on's are)."""
        base = plan.entitlements if plan is not None else ()
        extra = [f.entitlement for f in terms.features if f.in_force(day)]
        if not extra:
            return base
        merged = [e.model_dump() for e in base]
        for one in extra:
            try:
                merged = merged_entitlements(merged, [one])
            except VariantError:  # a pack of another meter than the plan's feature now counts
                continue
        return tuple(Entitlement.model_validate(data) for data in merged)

    def answer(self, owner: Owner, feature: str | None = None) -> EntitlementsAnswer | None:
        """Every feature of the subscription (or the one named); None for a subscription
        the worker does not know. A feature its plan does not give is denied."""
        (terms,) = self._terms_of([owner])
        if terms is None:
            return None
        now = self._now()
        day = now.date()
        period = Period.of(day, terms.anchor_day).label
        plan = self._plan(terms, now)
        given = self._given(plan, terms, day)
        if feature is not None:
            given = tuple(e for e in given if e.feature == feature)
        ended = terms.ended_at is not None and now >= terms.ended_at
        features = [self._access(owner, period, entitlement, ended) for entitlement in given]
        if feature is not None and not features:
            named = plan.label if plan is not None else f"plan {terms.plan_at(now)!r}"
            features = [FeatureAccess(feature, "boolean", False,
                                      reason=f"{named} does not give {feature!r}")]  # fmt: skip
        as_of = datetime.fromtimestamp(self.live.updated, UTC).isoformat()
        return EntitlementsAnswer(owner[0], owner[1], terms.plan_at(now),
                                  period.strftime("%Y-%m"), as_of, features)  # fmt: skip

    def _access(
        self, owner: Owner, period: date, entitlement: Entitlement, ended: bool
    ) -> FeatureAccess:
        reason = "the subscription has ended" if ended else ""
        if entitlement.kind == "boolean":
            on = entitlement.enabled and not ended
            return FeatureAccess(entitlement.feature, "boolean", on,
                                 reason=reason or ("" if on else "the feature is off"))  # fmt: skip
        if entitlement.kind == "config":
            return FeatureAccess(entitlement.feature, "config", not ended, reason=reason,
                                 config=entitlement.config)  # fmt: skip
        assert entitlement.meter is not None and entitlement.limit is not None
        meter = self._book.meter(entitlement.meter)
        used = self.live.meter(owner, period, meter.id, meter.aggregation).quantity
        usage = Decimal(used).scaleb(-meter.scale)
        limit = entitlement.limit
        hard = entitlement.enforcement == "hard"
        if hard and usage >= limit and not ended:
            reason = f"{trimmed(usage)} {meter.unit} used of a hard limit of {trimmed(limit)}"
        return FeatureAccess(
            entitlement.feature, "metered", not reason, reason=reason, meter=meter.id,
            unit=meter.unit, usage=trimmed(usage), limit=trimmed(limit),
            balance=trimmed(max(limit - usage, Decimal(0))),
            overage=trimmed(max(usage - limit, Decimal(0))),
            enforcement=entitlement.enforcement,
        )  # fmt: skip

    def _hard_limits(self, plan: Plan, terms: Terms, day: date) -> list[_Hard]:
        """The hard limits in force: the plan's (worked out once per version), or, for a
        subscription given features of its own, its own."""
        found = None if terms.features else self._hard.get((plan.id, plan.version))
        if found is None:
            found = [
                _Hard(e.meter, scaled(e.limit, self._book.meter(e.meter).scale))
                for e in self._given(plan, terms, day)
                if e.enforcement == "hard" and e.meter is not None and e.limit is not None
            ]
            if not terms.features:
                self._hard[plan.id, plan.version] = found
        return found

    def judge(self, owners: Iterable[Owner] | Mapping[Owner, str]) -> None:
        """Judge the hard limits of ``owners`` again from their live usage: every limit,
        or, given the meter each owner's durable batch changed (``LiveUsage.absorb``), only
        the limit on it, so the common case costs a lookup or two."""
        changed = owners if isinstance(owners, Mapping) else None
        owners = list(owners)
        if not owners:
            return
        now = self._now()
        day = now.date()
        denied = self.denied
        for owner, terms in zip(owners, self._terms_of(owners), strict=True):
            meter = changed[owner] if changed is not None else SEVERAL
            kept = denied.pop(owner, None) if denied else None
            if kept and meter != SEVERAL:  # a cap on a meter the batch did not change
                kept = {m: why for m, why in kept.items() if m != meter}
                if kept:
                    denied[owner] = kept
            plan = self._plan(terms, now) if terms is not None else None
            if terms is None or plan is None:
                continue
            limits = self._hard_limits(plan, terms, day)
            if meter != SEVERAL:
                limits = [hard for hard in limits if hard.meter == meter]
            if not limits:
                continue
            period = Period.of(day, terms.anchor_day).label
            over = {
                hard.meter: (f"{owner[0]}/{owner[1]} has used its hard limit of meter "
                             f"{hard.meter!r} under {plan.label} this period")
                for hard in limits
                if self.live.meter(owner, period, hard.meter,
                                   self._aggregation[hard.meter]).quantity >= hard.limit
            }  # fmt: skip
            if over:
                denied[owner] = {**denied.get(owner, {}), **over}

    def refresh(self) -> None:
        """Judge again those over a limit: an upgrade, or a new period, lifts a cap."""
        self.judge(list(self.denied))
