"""Which plan each subscription is on, from which day, and when it ends, as the worker
sees it: each subscription's ``Terms``.

Read whole from the store when the worker starts; afterwards each change arrives within
a second on the subscriptions topic (``feed``), and the store is read again
for the rows written since the last look (each change writes a larger version): every
``refresh_interval``, in case a change was stored but not published, and at most once per
``min_interval`` when an event names a subscription the worker does not know, so a
subscription created after the worker started is billed rather than dead-lettered; and
before a batch holding events stamped after the last read (``catch_up``), so an
immediate plan change is known before any event it applies to is priced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from subscriptions.model import Owner, Terms

REFRESH_SECONDS = 30.0  # how often a worker re-reads what changed in the store
# An immediate plan change is stored a second before it takes effect
# (``registry.IMMEDIATE_LEAD``): a read at most this long before an event's stamp has
# seen every change in force by then.
CATCH_UP_SECONDS = 0.5


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
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``load(version)`` returns the subscriptions written with a version above it."""
        self._load = load
        self._min_interval = min_interval
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._wall = wall
        self._read_at = 0.0  # when the last read began (unix seconds)
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
        self._read_at = self._wall()
        for owner, entry in self._load(self._version):
            self.absorb(owner, entry)
            self._version = max(self._version, entry.version)
        now = self._clock()
        self._next_load = now + self._min_interval
        self._next_refresh = now + self._refresh_interval

    def catch_up(self, newest: datetime) -> None:
        """Read the store again before events up to ``newest`` are priced, unless the last
        read began less than ``CATCH_UP_SECONDS`` before it: a change that takes effect
        by then is stored by then (an event that waits for it waits this read)."""
        if newest.timestamp() >= self._read_at + CATCH_UP_SECONDS:
            self._reload()

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
