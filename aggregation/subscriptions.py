"""Which plan each subscription is on, as the worker sees it.

Read from the store when the worker starts, and again when an event names a
subscription it does not know (at most once per ``min_interval``), so that a
subscription created after the worker started is billed within seconds rather
than dead-lettered until a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

Owner = tuple[str, str]  # tenant, subscription


class SubscriptionDirectory:
    def __init__(
        self,
        load: Callable[[], Mapping[Owner, str]],
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._min_interval = min_interval
        self._clock = clock
        self._plans = load()
        self._next_load = clock() + min_interval

    def plan_of(self, owner: Owner) -> str | None:
        plan = self._plans.get(owner)
        if plan is None and self._clock() >= self._next_load:
            self._plans = self._load()
            self._next_load = self._clock() + self._min_interval
            plan = self._plans.get(owner)
        return plan
