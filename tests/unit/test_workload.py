"""The load tests' workload: its shape is what it says, and the same seed gives the same
events."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime

from loadtests.workload import Shape, generate
from meterline.demo import generator

START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)
SUBS = generator.subscriptions(10_000, ["starter", "growth", "scale"], seed=3,
                               period=date(2026, 10, 1))  # fmt: skip


def test_the_same_seed_gives_the_same_events_and_another_seed_others() -> None:
    first = generate(SUBS, 5_000, START, END, seed=1)
    assert first.sent == generate(SUBS, 5_000, START, END, seed=1).sent
    assert first.sent != generate(SUBS, 5_000, START, END, seed=2).sent


def test_the_workload_has_the_shape_it_declares() -> None:
    shape = Shape(duplicate_share=0.1, late_share=0.05, bad_share=0.01, burst_share=0.001)
    load = generate(SUBS, 50_000, START, END, shape=shape, seed=4)
    sent = len(load.sent)
    assert sent == 50_000
    assert 0.08 < load.duplicates / sent < 0.12 and 0.008 < load.bad / sent < 0.012
    assert load.bursts > 10 and load.late > 0.03 * sent
    assert load.billable == [
        e for e in generator.distinct(load.sent) if not e.id.startswith("bad-")
    ]
    by_sub = Counter(event.subscription for event in load.sent)
    top = sum(count for _, count in by_sub.most_common(100))
    assert top > 0.3 * sent, "a hundred of ten thousand subscriptions send a third (Zipf)"
    out_of_order = sum(1 for a, b in itertools.pairwise(load.sent) if b.timestamp < a.timestamp)
    assert out_of_order > 0.02 * sent, "late events and re-sends arrive out of order"
