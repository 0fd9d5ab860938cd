"""The worker's view of subscriptions: re-read when an unknown one shows up, not too often."""

from __future__ import annotations

from aggregation.subscriptions import SubscriptionDirectory


def test_an_unknown_subscription_is_looked_up_again_but_at_most_once_per_interval() -> None:
    store = {("t", "s1"): "starter"}
    loads = []
    now = [100.0]

    def load() -> dict[tuple[str, str], str]:
        loads.append(now[0])
        return dict(store)

    directory = SubscriptionDirectory(load, min_interval=5.0, clock=lambda: now[0])
    store[("t", "s2")] = "growth"  # created after the worker started
    assert directory.plan_of(("t", "s2")) is None  # too soon after the first load
    now[0] = 105.0
    assert directory.plan_of(("t", "s2")) == "growth"
    assert directory.plan_of(("t", "nobody")) is None  # just loaded: no new query
    assert directory.plan_of(("t", "s1")) == "starter"
    assert loads == [100.0, 105.0]
