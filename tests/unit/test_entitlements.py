"""Entitlements answered from the live usage: each kind of feature, add-ons, hard limits
and their lifting, and a metered feature's usage, balance and overage against a plain
Decimal computation over any totals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.entitlements import Balances
from aggregation.live import LiveUsage
from aggregation.model import RatedRows, TotalKey
from rating.plans import PriceBook, PriceBookError
from subscriptions.directory import fixed
from subscriptions.model import GrantedFeature, Terms

NOW = datetime(2026, 8, 20, 12, tzinfo=UTC)
PERIOD = date(2026, 8, 1)
BOOK = PriceBook.model_validate({
    "meters": [{"id": "calls"}, {"id": "gb", "scale": 3, "aggregation": "max"}],
    "plans": [
        {"id": "basic", "currency": "USD",
         "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.01"},
                     {"meter": "gb", "model": "per_unit", "unit_price": "1"}],
         "entitlements": [
             {"feature": "sso", "kind": "boolean", "enabled": False},
             {"feature": "theme", "kind": "config", "config": {"colour": "blue"}},
             {"feature": "api", "kind": "metered", "meter": "calls", "limit": "1000",
              "enforcement": "hard"},
             {"feature": "storage", "kind": "metered", "meter": "gb", "limit": "2.5"},
         ]},
        {"id": "pro", "currency": "USD",
         "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.01"}],
         "entitlements": [{"feature": "api", "kind": "metered", "meter": "calls",
                           "limit": "100000"}]},
    ],
    "add_ons": [{"id": "pack", "currency": "USD", "entitlements": [
        {"feature": "api", "kind": "metered", "meter": "calls", "limit": "500"},
        {"feature": "sso", "kind": "boolean"},
    ]}],
})  # fmt: skip


def rows(*totals: tuple[str, str, int, str]) -> RatedRows:
    """(meter, plan, quantity, group) of subscription s in August."""
    found = RatedRows()
    for meter, plan, quantity, group in totals:
        found.keys.append(TotalKey("t", "s", meter, PERIOD, plan, 1, group))
        found.currencies.append("USD")
        found.quantities.append(quantity)
        found.amounts_nanos.append(quantity * 10_000_000)
        found.partitions.append(0)
    return found


def balances(plan: str = "basic", ended_at: datetime | None = None) -> Balances:
    terms = {("t", "s"): Terms(plan, ended_at, 1)}
    return Balances(BOOK, fixed(terms), LiveUsage(), clock=NOW.timestamp)


def test_each_kind_of_feature_is_answered_with_its_access() -> None:
    held = balances()
    held.live.absorb(rows(("calls", "basic", 400, ""), ("calls", "basic", 100, '{"r":"eu"}')))
    answer = held.answer(("t", "s"))
    assert answer is not None and answer.period == "2026-08" and answer.plan == "basic"
    features = {f.feature: f for f in answer.features}
    assert not features["sso"].has_access and features["sso"].reason
    assert features["theme"].has_access and features["theme"].config == {"colour": "blue"}
    api = features["api"]
    assert (api.has_access, api.usage, api.limit, api.balance, api.overage) == (
        True, "500", "1000", "500", "0")  # fmt: skip
    assert features["storage"].usage == "0" and features["storage"].has_access


def test_a_hard_limit_denies_once_reached_and_a_soft_one_bills_overage() -> None:
    held = balances()
    held.judge(held.live.absorb(rows(("calls", "basic", 1000, ""), ("gb", "basic", 4000, ""))))
    features = {f.feature: f for f in held.answer(("t", "s")).features}  # type: ignore[union-attr]
    assert not features["api"].has_access and "hard limit" in features["api"].reason
    assert features["api"].balance == "0"
    storage = features["storage"]
    assert storage.has_access and storage.usage == "4" and storage.overage == "1.5"
    assert held.denied == {("t", "s"): {"calls": held.denied[("t", "s")]["calls"]}}


def test_a_plan_change_lifts_the_cap_when_judged_again() -> None:
    terms = {("t", "s"): Terms("basic", None, 1)}
    held = Balances(BOOK, fixed(terms), LiveUsage(), clock=NOW.timestamp)
    held.judge(held.live.absorb(rows(("calls", "basic", 1200, ""))))
    assert ("t", "s") in held.denied
    terms[("t", "s")] = Terms("pro", None, 2)
    held.refresh()
    assert held.denied == {}
    (api,) = held.answer(("t", "s"), "api").features  # type: ignore[union-attr]
    assert api.has_access and api.limit == "100000" and api.usage == "1200"


def test_an_add_on_raises_a_metered_limit_and_replaces_a_boolean() -> None:
    held = balances("basic+pack")
    held.judge(held.live.absorb(rows(("calls", "basic+pack", 1200, ""))))
    features = {f.feature: f for f in held.answer(("t", "s")).features}  # type: ignore[union-attr]
    assert features["api"].limit == "1500" and features["api"].has_access
    assert features["api"].enforcement == "hard"
    assert features["sso"].has_access
    assert held.denied == {}


def test_an_unknown_feature_an_unknown_subscription_and_an_ended_one() -> None:
    held = balances()
    (missing,) = held.answer(("t", "s"), "teleport").features  # type: ignore[union-attr]
    assert not missing.has_access and "does not give" in missing.reason
    assert held.answer(("t", "nobody")) is None
    ended = balances(ended_at=datetime(2026, 8, 10, tzinfo=UTC)).answer(("t", "s"))
    assert ended is not None and not any(f.has_access for f in ended.features)


def test_a_metered_entitlement_must_name_a_known_meter_in_its_scale() -> None:
    plan = {"id": "p", "currency": "USD",
            "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "1"}]}  # fmt: skip
    for entitlement, problem in (
        ({"feature": "x", "kind": "metered", "meter": "nope", "limit": "1"}, "not declared"),
        ({"feature": "x", "kind": "metered", "meter": "calls", "limit": "0.5"}, "decimal"),
        ({"feature": "x", "kind": "metered", "meter": "calls"}, "needs meter and limit"),
        ({"feature": "x", "kind": "boolean", "enforcement": "hard"}, "for a metered one"),
    ):
        book = {"meters": [{"id": "calls"}], "plans": [{**plan, "entitlements": [entitlement]}]}
        with pytest.raises((PriceBookError, ValueError), match=problem):
            PriceBook.model_validate(book)


@settings(max_examples=200, deadline=None)
@given(
    quantities=st.lists(st.integers(0, 10**12), max_size=5),
    limit=st.integers(0, 10**13),
    scale=st.integers(0, 9),
)
def test_usage_balance_and_overage_are_the_decimal_computation(
    quantities: list[int], limit: int, scale: int
) -> None:
    limit_units = Decimal(limit).scaleb(-scale)
    book = PriceBook.model_validate({
        "meters": [{"id": "m", "scale": scale}],
        "plans": [{"id": "p", "currency": "USD",
                   "charges": [{"meter": "m", "model": "per_unit", "unit_price": "1"}],
                   "entitlements": [{"feature": "f", "kind": "metered", "meter": "m",
                                     "limit": str(limit_units), "enforcement": "hard"}]}],
    })  # fmt: skip
    held = Balances(book, fixed({("t", "s"): Terms("p", None, 1)}), LiveUsage(), NOW.timestamp)
    live = RatedRows()
    for number, quantity in enumerate(quantities):  # parts of the period: groups
        live.keys.append(TotalKey("t", "s", "m", PERIOD, "p", 1, str(number)))
        live.currencies.append("USD")
        live.quantities.append(quantity)
        live.amounts_nanos.append(0)
        live.partitions.append(0)
    held.live.absorb(live)
    held.judge([("t", "s")])
    (feature,) = held.answer(("t", "s"), "f").features  # type: ignore[union-attr]

    used = sum((Decimal(q).scaleb(-scale) for q in quantities), Decimal(0))
    assert Decimal(feature.usage or "") == used
    assert Decimal(feature.balance or "") == max(limit_units - used, Decimal(0))
    assert Decimal(feature.overage or "") == max(used - limit_units, Decimal(0))
    assert feature.has_access == (used < limit_units)
    assert (("t", "s") in held.denied) == (used >= limit_units)


def test_features_given_to_one_subscription_merge_with_its_plans_while_in_force() -> None:
    given = (
        GrantedFeature(date(2026, 8, 1), {"feature": "api", "kind": "metered",
                                          "meter": "calls", "limit": "500"}),
        GrantedFeature(date(2026, 8, 1), {"feature": "sso", "kind": "boolean"},
                       date(2026, 9, 1)),
        GrantedFeature(date(2026, 7, 1), {"feature": "beta", "kind": "boolean"},
                       date(2026, 8, 1)),  # ended before now
    )  # fmt: skip
    terms = {("t", "s"): Terms("basic", None, 1, features=given)}
    held = Balances(BOOK, fixed(terms), LiveUsage(), clock=NOW.timestamp)
    held.judge(held.live.absorb(rows(("calls", "basic", 1200, ""))))
    features = {f.feature: f for f in held.answer(("t", "s")).features}  # type: ignore[union-attr]
    assert features["api"].limit == "1500" and features["api"].has_access  # 1000 + 500
    assert features["api"].enforcement == "hard" and held.denied == {}
    assert features["sso"].has_access and "beta" not in features
    held.judge(held.live.absorb(rows(("calls", "basic", 1500, ""))))
    assert ("t", "s") in held.denied
