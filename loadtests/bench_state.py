"""Memory per dedupe mark and per period-to-date total, and the cost of one dedupe decision,
against a plain set of the full identities (what one would write first), in the same run.

    python -m loadtests.bench_state [--events N] [--subscriptions N]

A mark is a 16-byte digest of (tenant, source, id, meter) and the event's position, whatever
the length of the id; a total is one per (subscription, meter, period, plan version).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import msgspec

from aggregation.model import Position, TotalKey
from aggregation.state import UsageState, dedupe_key, pack
from base.events import UsageEvent

METERS = ("api_calls", "tokens")
PERIOD = date(2026, 10, 1)


def make_events(count: int, subscriptions: int) -> list[UsageEvent]:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    return [
        UsageEvent(
            id=f"0b9f6a4c-{n:012d}-request", tenant="acme", subscription=f"sub-{n % subscriptions}",
            meter=METERS[n % 2], quantity=1, timestamp=start + timedelta(seconds=n),
            source="api-gateway",
        )
        for n in range(count)
    ]  # fmt: skip


def measured(work: Callable[[], object]) -> tuple[object, int, float]:
    """(result, bytes still allocated by it, seconds)."""
    tracemalloc.start()
    began = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - began
    allocated, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, allocated, seconds


def fill_state(events: list[UsageEvent]) -> UsageState:
    state = UsageState()
    for offset, event in enumerate(events):
        key = TotalKey(event.tenant, event.subscription, event.meter, PERIOD, "pro", 1, "")
        state.apply(Position(0, offset, 0), dedupe_key(event), key, event.quantity)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="distinct events")
    parser.add_argument("--subscriptions", type=int, default=10_000)
    args = parser.parse_args()
    events = make_events(args.events, args.subscriptions)

    marks, marks_bytes, _ = measured(
        lambda: {dedupe_key(e): pack(Position(0, offset, 0)) for offset, e in enumerate(events)}
    )
    _, ids_bytes, _ = measured(
        lambda: {f"{e.tenant}\x1f{e.source}\x1f{e.id}\x1f{e.meter}" for e in events}
    )
    began = time.perf_counter()
    state = fill_state(events)
    apply_seconds = time.perf_counter() - began
    _, totals_bytes, _ = measured(
        lambda: {msgspec.structs.replace(k): replace(t) for k, t in state.totals.items()}
    )
    totals = len(state.totals)
    assert isinstance(marks, dict) and len(marks) == len(state.marks) == args.events
    figures = {
        "events": args.events,
        "bytes_per_mark": round(marks_bytes / args.events, 1),
        "bytes_per_total": round(totals_bytes / totals, 1),
        "totals": totals,
        "bytes_per_full_id_in_a_set": round(ids_bytes / args.events, 1),
        "mark_vs_full_id_memory": round(marks_bytes / ids_bytes, 2),
        "apply_us_per_event": round(apply_seconds / args.events * 1e6, 2),
    }
    print(
        f"{args.events:,} distinct events: {figures['bytes_per_mark']} bytes per dedupe mark "
        f"(a set of the full ids: {figures['bytes_per_full_id_in_a_set']}), "
        f"{figures['bytes_per_total']} bytes per total ({totals:,} totals); "
        f"{figures['apply_us_per_event']} µs per dedupe-and-add"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
