"""When a delivery is tried again: at once, then after each of ``RETRY_DELAYS`` from the
attempt before, about three days in all; then it is given up (and can be replayed by
command). A 2xx answer delivers it; anything else, or no answer, is a failed attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

RETRY_DELAYS = tuple(
    timedelta(seconds=s)
    for s in (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 14 * 3600, 20 * 3600, 20 * 3600)
)
ATTEMPTS = 1 + len(RETRY_DELAYS)
NOW = datetime.min.replace(tzinfo=UTC)  # due whenever it is asked
SPAN = sum(RETRY_DELAYS, timedelta())  # from the first attempt to the last: ~72 hours


def delivered(status: int) -> bool:
    return 200 <= status < 300


def next_attempt(failed: Sequence[datetime]) -> datetime | None:
    """When to try again after the ``failed`` attempts (in order, since the message was
    made or last replayed); None once every attempt is spent."""
    if not failed:
        return NOW  # never tried
    if len(failed) >= ATTEMPTS:
        return None
    return failed[-1] + RETRY_DELAYS[len(failed) - 1]
