"""Rating a closed period again from its events: what a correction (a backfill or a
retraction) makes of the totals it touches. Pure: the events come in, the totals out.

The events run through the worker's own batch step, so a corrected total is counted,
deduplicated and rated by the same rules as a live one. They run in time order (ties
kept in the order given): that is what a gauge weighed over time needs, and it is the
order in which a period's free transactions are counted once the period is corrected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from aggregation.batch import BatchProcessor
from aggregation.model import RatedRows, Record, TotalKey
from aggregation.state import UsageState
from base.events import EventWindow, UsageEvent, encode
from rating.plans import PriceBook
from rating.rater import rate
from rating.table import ChargeTable
from subscriptions.model import Owner, Terms

# A closed period is as old as it is: the age and clock rules were applied when its events
# were first taken, and a backfill checks its own (``corrections``).
_ANY_TIME = EventWindow(max_age=timedelta(days=365_000), max_skew=timedelta(days=365_000))


@dataclass(frozen=True)
class Refused:
    event: UsageEvent
    reason: str
    detail: str


@dataclass
class Rerated:
    rows: RatedRows = field(default_factory=RatedRows)
    refused: list[Refused] = field(default_factory=list)


def rerate(
    events: Sequence[UsageEvent],
    terms_of: Callable[[Sequence[Owner]], list[Terms | None]],
    book: PriceBook,
    charges: ChargeTable,
) -> Rerated:
    """The totals ``events`` (distinct, of closed periods) come to, and the events the
    batch step refuses, with its reasons."""
    ordered = sorted(range(len(events)), key=lambda i: events[i].timestamp)
    # One partition, one event per record, at increasing offsets: every event is new to
    # the replay rule, and a fresh state has no marks to take one for a duplicate.
    records = [Record(0, place, encode(events[i])) for place, i in enumerate(ordered)]
    processor = BatchProcessor(UsageState(), terms_of, book, charges, window=_ANY_TIME,
                               partitions=1)  # fmt: skip
    result = processor.process(records)
    refused = [Refused(r.event, r.reason, r.detail) for r in result.rejected if r.event]
    return Rerated(result.rated, refused)


def zero_rows(keys: Sequence[TotalKey], book: PriceBook, charges: ChargeTable) -> RatedRows:
    """Totals of ``keys`` with no event left, rated at zero (a first tier billed at zero
    usage keeps its fee)."""
    if not keys:
        return RatedRows()
    plans = [book.plan(key.plan, key.plan_version) for key in keys]
    index = np.array([charges.row(plan, key.meter) for plan, key in zip(plans, keys, strict=True)],
                     dtype=np.int64)  # fmt: skip
    amounts = rate(charges, index, np.zeros(len(keys), dtype=np.int64)).tolist()
    zeros = [0] * len(keys)
    return RatedRows(list(keys), [plan.currency for plan in plans], zeros, amounts, zeros,
                     zeros, zeros, zeros, zeros, zeros, zeros, zeros)  # fmt: skip
