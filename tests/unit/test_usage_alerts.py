"""Usage alerts judged on a batch's rated totals against the live usage before it: a
crossing fires once, never again on a replay or past the threshold, again in the next
period; quantities, amounts and percentages of a limit; rules per subscription or plan."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.alerts import AlertRule, AlertRules, check, crossing_id, crossings
from aggregation.live import LiveUsage
from aggregation.model import RatedRows, TotalKey
from rating.plans import PriceBook

NOW = datetime(2026, 8, 20, tzinfo=UTC)
AUGUST, SEPTEMBER = date(2026, 8, 1), date(2026, 9, 1)
BOOK = PriceBook.model_validate({
    "meters": [{"id": "calls"}, {"id": "tokens", "group_by": ["model"]}],
    "plans": [{"id": "basic", "currency": "USD",
               "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.5"},
                           {"meter": "tokens", "model": "per_unit", "unit_price": "0.001"}],
               "entitlements": [{"feature": "api", "kind": "metered", "meter": "calls",
                                 "limit": "200"}]}],
    "add_ons": [{"id": "pack", "currency": "USD", "fixed_fees": [{"id": "f", "amount": "1"}]}],
})  # fmt: skip


def rule(rule_id: str, metric: str, threshold: str, **fields: str) -> AlertRule:
    base = {"scope": "subscription", "target": "s", "meter": "calls"}
    return AlertRule("t", rule_id, metric=metric, threshold=threshold, version=1,
                     **{**base, **fields})  # type: ignore[arg-type]  # fmt: skip


def rules(*given: AlertRule) -> AlertRules:
    return AlertRules(lambda version: [r for r in given if r.version > version], lambda: 0.0)


def rated(quantity: int, period: date = AUGUST, plan: str = "basic", meter: str = "calls",
          group: str = "") -> RatedRows:  # fmt: skip
    rows = RatedRows()
    rows.keys.append(TotalKey("t", "s", meter, period, plan, 1, group))
    rows.currencies.append("USD")
    rows.quantities.append(quantity)
    rows.amounts_nanos.append(quantity * (500_000_000 if meter == "calls" else 1_000_000))
    rows.partitions.append(2)
    return rows


def batches(live: LiveUsage, watch: AlertRules, *totals: RatedRows) -> list[list[str]]:
    """Each batch's crossings (rule ids), the batch taken in once judged, as the worker does."""
    fired = []
    for batch in totals:
        fired.append([c.rule for c in crossings(watch, live, batch, BOOK, NOW)])
        live.absorb(batch)
    return fired


def test_a_crossing_fires_once_and_again_in_the_next_period() -> None:
    watch = rules(rule("q", "quantity", "100"))
    live = LiveUsage()
    assert batches(live, watch, rated(50), rated(99), rated(100), rated(150), rated(99),
                   rated(120, SEPTEMBER)) == [[], [], ["q"], [], [], ["q"]]  # fmt: skip


def test_a_replay_of_a_batch_that_became_durable_fires_nothing() -> None:
    """The live usage restored from the store is past the threshold: the same totals
    written again are no crossing. A batch that did not become durable is judged against
    the usage before it, and finds the same crossing, with the same id."""
    watch = rules(rule("q", "quantity", "100"))
    live = LiveUsage()
    (first,) = crossings(watch, live, rated(120), BOOK, NOW)
    again = crossings(watch, live, rated(120), BOOK, datetime(2026, 8, 21, tzinfo=UTC))
    assert [c.id for c in again] == [first.id]
    live.absorb(rated(120))
    assert crossings(watch, live, rated(120), BOOK, NOW) == []
    assert first.id == crossing_id(watch.of(("t", "s"), "basic")[0], "s", AUGUST)


def test_amounts_percentages_and_every_meter_of_an_amount() -> None:
    watch = rules(rule("spend", "amount", "60"), rule("share", "percent", "50", feature="api"),
                  rule("all", "amount", "61", meter=""))  # fmt: skip
    live = LiveUsage()
    # 100 calls: 50 USD, 50% of the 200 included; 130 calls: 65 USD; tokens add 1 USD.
    assert batches(live, watch, rated(99), rated(100), rated(130),
                   rated(1000, meter="tokens", group='{"model":"a"}')) == [
        [], ["share"], ["spend", "all"], []]  # fmt: skip


def test_a_rule_on_a_plan_watches_its_variants_and_others_watch_nothing() -> None:
    another_tenants = AlertRule("other", "x", "subscription", "s", "quantity", "1", "calls")
    watch = rules(rule("p", "quantity", "10", scope="plan", target="basic"), another_tenants)
    assert batches(LiveUsage(), watch, rated(20, plan="basic+pack")) == [["p"]]


def test_a_removed_rule_is_read_again_and_fires_no_more() -> None:
    stored = [rule("q", "quantity", "10")]
    clock = [0.0]
    watch = AlertRules(lambda version: [r for r in stored if r.version > version],
                       lambda: clock[0])  # fmt: skip
    assert watch.of(("t", "s"), "basic")
    stored.append(AlertRule("t", "q", "subscription", "s", "quantity", "10", "calls", version=2,
                            removed=True))  # fmt: skip
    clock[0] = 5.0
    assert not watch
    assert crossings(watch, LiveUsage(), rated(20), BOOK, NOW) == []


def test_rules_that_cannot_be_judged_are_refused_with_a_reason() -> None:
    for bad, problem in (
        (rule("r", "quantity", "0"), "positive"),
        (rule("r", "quantity", "ten"), "decimal"),
        (rule("r", "speed", "1"), "metric"),
        (rule("r", "quantity", "1", meter="nope"), "meter"),
        (rule("r", "percent", "1"), "feature"),
        (rule("r", "quantity", "1", scope="plan", target="gold"), "plan"),
        (rule("r", "quantity", "1", scope="team"), "scope"),
    ):
        said = check(bad, BOOK)
        assert said is not None and problem in said, (bad, said)
    assert check(rule("r", "amount", "1.5", meter=""), BOOK) is None


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.integers(0, 500), min_size=1, max_size=12),
       threshold=st.integers(1, 3000))  # fmt: skip
def test_fires_exactly_when_the_running_total_first_reaches_the_threshold(
    steps: list[int], threshold: int
) -> None:
    watch = rules(rule("q", "quantity", str(threshold)))
    live = LiveUsage()
    running = [sum(steps[: i + 1]) for i in range(len(steps))]
    fired = batches(live, watch, *(rated(total) for total in running))
    expected = [["q"] if (i == 0 or running[i - 1] < threshold) and total >= threshold
                else [] for i, total in enumerate(running)]  # fmt: skip
    assert fired == expected
    assert sum(map(len, fired)) == (1 if running[-1] >= threshold else 0)


def test_a_credit_balance_fires_once_as_the_periods_amount_takes_it_to_the_threshold() -> None:
    """10 USD of credit as the period began; each call rates 0.50: the balance falls to
    2 USD at 16 calls, and the rule fires then, once, and not for another currency."""
    watch = rules(rule("low", "credit_balance", "2", meter=""))
    live = LiveUsage()
    credit = {("t", "s"): ("USD", Decimal(10))}

    def fired(quantity: int) -> list[str]:
        found = [c.rule for c in crossings(watch, live, rated(quantity), BOOK, NOW,
                                           credit_of=credit.get)]  # fmt: skip
        live.absorb(rated(quantity))
        return found

    assert [fired(q) for q in (10, 15, 16, 20)] == [[], [], ["low"], []]
    (crossing,) = crossings(watch, LiveUsage(), rated(30), BOOK, NOW, credit_of=credit.get)
    assert crossing.value == Decimal(-5)  # 10 less 15 USD rated
    assert crossings(watch, LiveUsage(), rated(30), BOOK, NOW,
                     credit_of={("t", "s"): ("EUR", Decimal(10))}.get) == []  # fmt: skip
    assert crossings(watch, LiveUsage(), rated(30), BOOK, NOW, credit_of=None) == []
    assert check(rule("r", "credit_balance", "0", meter=""), BOOK) is None
