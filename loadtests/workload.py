"""The load tests' workload: shaped like production traffic, the same for the same seed.

- Traffic follows a Zipf law over the subscriptions (a million by default in the
  benchmarks): a few send most events, most send a few.
- The demo's meters: API calls, tokens grouped by model, seat counts, sign-ins counted
  per distinct user.
- Duplicates: a share of sends re-send an earlier event with its id, most of them soon
  (a retry among the last ``retry_horizon`` sends), some late (a producer replaying a
  backlog: any earlier event).
- Late events: a share is stamped hours before it is sent.
- Bursts: now and then one subscription sends a block of events at once.
- A few bad events that no one can bill (see ``generator.spoiled_event``).

Events are stamped in send order across [start, end), so "late" means late against the
events around it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from base.events import UsageEvent
from meterline.demo import generator
from subscriptions.model import Subscription


@dataclass(frozen=True)
class Shape:
    zipf_exponent: float = 1.1
    duplicate_share: float = 0.05  # of sends
    late_resend_share: float = 0.2  # of duplicates: a re-send of any earlier event
    retry_horizon: int = 1_000  # the other duplicates re-send one of the last N sends
    late_share: float = 0.02  # of new events: stamped up to ``late_hours`` early
    late_hours: float = 48.0
    burst_share: float = 0.0005  # of sends: the start of a burst
    burst_size: int = 200
    bad_share: float = 0.001  # of sends


@dataclass(frozen=True)
class Workload:
    sent: list[UsageEvent]  # in send order, duplicates and bad events included
    billable: list[UsageEvent]  # what meterline must bill: each good event once
    duplicates: int
    late: int
    bursts: int
    bad: int


def generate(
    subs: Sequence[Subscription],
    count: int,
    start: datetime,
    end: datetime,
    *,
    shape: Shape = Shape(),
    seed: int = 7,
) -> Workload:
    """``count`` sends over [start, end)."""
    rng = random.Random(seed)
    ranks = _zipf_ranks(len(subs), count, shape.zipf_exponent, seed)
    span = end - start
    sent: list[UsageEvent] = []
    billable: list[UsageEvent] = []
    duplicates = late = bursts = bad = 0
    burst_left, burst_sub = 0, subs[0]
    for number in range(count):
        moment = start + span * (number / count)
        if burst_left:
            burst_left -= 1
            sub = burst_sub
        elif rng.random() < shape.burst_share:
            bursts += 1
            burst_left, burst_sub = shape.burst_size - 1, subs[ranks[number]]
            sub = burst_sub
        else:
            sub = subs[ranks[number]]
        roll = rng.random()
        if sent and roll < shape.duplicate_share:
            duplicates += 1
            if rng.random() < shape.late_resend_share:
                sent.append(sent[rng.randrange(len(sent))])
            else:
                sent.append(sent[rng.randrange(max(0, len(sent) - shape.retry_horizon), len(sent))])
            continue
        if roll < shape.duplicate_share + shape.bad_share:
            bad += 1
            sent.append(generator.spoiled_event(sub, bad, seed, moment))
            continue
        if rng.random() < shape.late_share:
            late += 1
            moment = max(start, moment - timedelta(hours=rng.uniform(1, shape.late_hours)))
        event = generator.usage_event(rng, sub, f"w{seed}-{number:010d}", moment)
        sent.append(event)
        billable.append(event)
    return Workload(sent, billable, duplicates, late, bursts, bad)


def _zipf_ranks(population: int, count: int, exponent: float, seed: int) -> list[int]:
    """``count`` indices into the population, Zipf-distributed, the popular ones spread
    over the population (so over every partition) by a seeded permutation."""
    numbers = np.random.default_rng(seed)
    weights = np.cumsum(1.0 / np.arange(1, population + 1, dtype=np.float64) ** exponent)
    ranks = np.searchsorted(weights, numbers.random(count) * weights[-1], side="right")
    order = numbers.permutation(population)
    return [int(i) for i in order[np.minimum(ranks, population - 1)]]
