"""Which plan each subscription is on, from which day, and when it ends, as the worker
sees it: each subscription's ``Terms``.

Read whole from the store when the worker starts; afterwards each change arrives within
a second on the subscriptions topic (``feed``), and the store is read again
for the rows written since the last look (each change writes a larger version): every
``refresh_interval``, in case a change was stored but not published, and at most once per
``min_interval`` when an event names a subscription the worker does not know, so a
subscription created after the worker started is billed rather than dead-lettered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from subscriptions.model import Owner, Terms

REFRESH_SECONDS = 30.0  # how often a worker re-reads what changed in the store


Rows = Iterable[tuple[Owner, Terms]]


def fixed(terms: Mapping[Owner, Terms]) -> Callable[[Sequence[Owner]], list[Terms | None]]:
    """``SubscriptionDirectory.entries`` over subscriptions that do not change (tests,
    benchmarks)."""
    return lambda owners: [terms.get(owner) for owner in owners]


class SubscriptionDirectory:
    def __init__(
        self,
        load: Callable[[int], Rows],
        min_interval: float = 5.0,
        refresh_interval: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``load(version)`` returns the subscriptions written with a version above it."""
        self._load = load
        self._min_interval = min_interval
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._entries: dict[Owner, Terms] = {}
        self._version = -1
        # The latest day any known subscription's periods start on: how far back an
        # accepted event's period can start (1 while every one bills calendar months).
        self.latest_anchor = 1
        self._reload()

    def absorb(self, owner: Owner, entry: Terms) -> None:
        """Take a subscription's row, unless a newer version of it is known already."""
        known = self._entries.get(owner)
        if known is None or entry.version >= known.version:
            self._entries[owner] = entry
            self.latest_anchor = max(self.latest_anchor, entry.anchor_day)

    def _reload(self) -> None:
        for owner, entry in self._load(self._version):
            self.absorb(owner, entry)
            self._version = max(self._version, entry.version)
        now = self._clock()
        self._next_load = now + self._min_interval
        self._next_refresh = now + self._refresh_interval

    def entry(self, owner: Owner) -> Terms | None:
        return self.entries([owner])[0]

    def entries(self, owners: Sequence[Owner]) -> list[Terms | None]:
        """The terms of each owner (None: unknown), the clock and the store asked once for
        all of them: the batch step looks up every event's."""
        now = self._clock()
        if now >= self._next_refresh:
            self._reload()
        get = self._entries.get
        found = [get(owner) for owner in owners]
        if now >= self._next_load and None in found:
            self._reload()
            found = [get(owner) for owner in owners]
        return found
