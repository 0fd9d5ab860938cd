"""A subscription and a customer: the one model of each, and the views other stages take
of a subscription (the worker prices by its ``Terms``; an invoice bills its active days).

A subscription is billed by whole UTC days: it is active from the day it starts until the
day it ends (exclusive), on the plan it started on and then on each dated change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from base.events import utc_day
from rating.period import Period, PlanChanges, plan_at, plan_on

Owner = tuple[str, str]  # tenant, subscription
NET_DAYS = 30  # the payment terms of a customer that gives none: net 30


def version_of(now: datetime) -> int:
    """Rows written later carry larger versions, so the latest write wins everywhere (the
    store keeps the highest, and so does every worker, whichever way a row reached it)."""
    return int(now.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class GrantedFeature:
    """A feature given to one subscription from ``day`` until ``ended`` (exclusive) or
    for good: an entitlement of its own, or, for a metered one its plan gives, more of the
    limit (``rating.plans.Entitlement`` as data, as the row and the topic carry it)."""

    day: date
    entitlement: dict[str, Any]
    ended: date | None = None

    @property
    def feature(self) -> str:
        return str(self.entitlement["feature"])

    def in_force(self, day: date) -> bool:
        return self.day <= day and (self.ended is None or day < self.ended)


@dataclass(frozen=True, slots=True)
class Terms:
    """What the worker prices a subscription's events by, and nothing more (it holds one
    per subscription, a million of them): the plan on each day, the end, the anchor."""

    plan: str  # the plan it started on
    ended_at: datetime | None  # exclusive; usage stamped from then on is not billed
    version: int
    changes: PlanChanges = ()  # (when it takes effect, plan), in time order
    anchor_day: int = 1  # the day of the month its billing periods start on
    features: tuple[GrantedFeature, ...] = ()  # given to it beyond its plan's

    def plan_on(self, day: date) -> str:
        """The plan as ``day`` begins."""
        return plan_on(self.plan, self.changes, day) if self.changes else self.plan

    def plan_at(self, moment: datetime) -> str:
        return plan_at(self.plan, self.changes, moment) if self.changes else self.plan


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    """A price book coupon a subscription took on from ``day``, until the period that
    starts on or after ``ended`` (when it was removed) or the coupon's own end."""

    day: date
    coupon: str
    ended: date | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    tenant: str
    subscription: str
    customer: str
    plan: str  # the plan it started on
    started_at: datetime
    ended_at: datetime | None = None  # exclusive
    changes: PlanChanges = ()  # (when it takes effect, plan), in time order
    anchor_day: int = 1  # the day of the month its billing periods start on (1 to 28)
    version: int = 0  # of the stored row this is; the registry sets it when it writes one
    coupons: tuple[AppliedCoupon, ...] = ()  # in the order they were applied
    features: tuple[GrantedFeature, ...] = ()  # given to it beyond its plan's, in order

    @property
    def owner(self) -> Owner:
        return self.tenant, self.subscription

    @property
    def name(self) -> str:
        return f"{self.tenant}/{self.subscription}"

    @property
    def active_from(self) -> date:
        """Its first billed day."""
        return utc_day(self.started_at)

    @property
    def active_until(self) -> date | None:
        """The day its end falls on (exclusive: billed up to the day before, prorated by
        day), or None while it has no end."""
        return utc_day(self.ended_at) if self.ended_at is not None else None

    def plan_on(self, day: date) -> str:
        """The plan as ``day`` begins."""
        return plan_on(self.plan, self.changes, day)

    def plan_at(self, moment: datetime) -> str:
        return plan_at(self.plan, self.changes, moment)

    def period(self, label: date) -> Period:
        """Its billing period named ``label`` (the month it starts in)."""
        return Period.labelled(label, self.anchor_day)

    def terms(self) -> Terms:
        return Terms(self.plan, self.ended_at, self.version, self.changes, self.anchor_day,
                     self.features)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Customer:
    tenant: str
    customer: str
    name: str = ""
    external_id: str = ""
    tax_rate: Decimal = Decimal(0)  # percent
    currency: str = ""  # the billing currency; "" when not given
    address: str = ""  # the billing address an issued invoice shows (lines: "\n")
    tax_id: str = ""  # its VAT or tax number, for the invoice
    payment_terms_days: int = NET_DAYS  # an invoice is due this many days after its issue
    country: str = ""  # ISO 3166-1 alpha-2: whose tax it pays (invoicing.tax); "": tax_rate
    region: str = ""  # where a country's rate depends on it (a Canadian province: ON)
    tax_exempt: bool = False

    def refuses(self, currency: str) -> str | None:
        """Why a plan priced in ``currency`` cannot bill this customer, if it cannot."""
        if self.currency and currency != self.currency:
            return f"customer {self.customer!r} is billed in {self.currency}, not {currency}"
        return None


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a subscription's history: what was done, when, and from when on."""

    tenant: str
    subscription: str
    recorded_at: datetime
    kind: str  # imported, plan changed, prices revised, charge added/removed, cancelled, renewed
    effective_at: datetime | None
    plan: str
    detail: str = ""
