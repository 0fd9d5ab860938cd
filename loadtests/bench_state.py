"""Memory per dedupe mark and per period-to-date total, and the cost of one dedupe decision,
against a plain set of the full identities (what one would write first), in the same run;
and the marks kept on disk (``aggregation.marks.DiskGeneration``): RAM and disk bytes per
remembered mark, CPU per decision, against marks in memory.

    python -m loadtests.bench_state [--events N] [--subscriptions N] [--disk-marks N]

A mark is a 16-byte digest of (tenant, source, id, meter) and the event's position, whatever
the length of the id; a total is one per (subscription, meter, period, plan version).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec

from aggregation.marks import DiskGeneration, Marks, disk_generations, pack
from aggregation.model import Position, TotalKey
from aggregation.state import UsageState, dedupe_key
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


BATCH = 10_000  # marks per batch, as the batch step asks for them


def disk_marks(count: int) -> dict[str, float]:
    """``count`` new marks through disk marks, a batch at a time as the worker does (one
    prefetch, a lookup and a set per mark, one flush); then one batch of repeats."""
    with tempfile.TemporaryDirectory(prefix="meterline-marks-") as folder:
        marks = Marks(disk_generations(Path(folder)))
        seconds = 0.0
        for start in range(0, count, BATCH):
            batch = [os.urandom(16) for _ in range(min(BATCH, count - start))]
            began = time.process_time()
            marks.prefetch(batch)
            for number, mark in enumerate(batch):
                if marks.get(mark) is None:
                    marks[mark] = pack(Position(0, start + number, 0))
            marks.flush()
            seconds += time.process_time() - began
        repeats = batch
        began = time.process_time()
        marks.prefetch(repeats)
        found = sum(marks.get(mark) is not None for mark in repeats)
        repeat_seconds = time.process_time() - began
        assert found == len(repeats) and len(marks) == count
        newest = marks.newest
        assert isinstance(newest, DiskGeneration)
        newest.compact()
        disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        return {
            "disk_marks": count,
            "disk_marks_ram_bytes_per_mark": round(newest.memory_bytes / count, 2),
            "disk_marks_disk_bytes_per_mark": round(disk / count, 1),
            "disk_marks_us_per_new_mark": round(seconds / count * 1e6, 2),
            "disk_marks_us_per_repeat": round(repeat_seconds / len(repeats) * 1e6, 2),
        }


def memory_marks_us_per_new_mark(count: int) -> float:
    marks = Marks()
    batch = [os.urandom(16) for _ in range(count)]
    began = time.process_time()
    for number, mark in enumerate(batch):
        if marks.get(mark) is None:
            marks[mark] = pack(Position(0, number, 0))
    return (time.process_time() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="distinct events")
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--disk-marks", type=int, default=2_000_000, help="marks on disk")
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
        lambda: {
            msgspec.structs.replace(k): msgspec.structs.replace(t) for k, t in state.totals.items()
        }
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
        **disk_marks(args.disk_marks),
        "memory_marks_us_per_new_mark": round(memory_marks_us_per_new_mark(args.events), 2),
    }
    print(
        f"{args.events:,} distinct events: {figures['bytes_per_mark']} bytes per dedupe mark "
        f"(a set of the full ids: {figures['bytes_per_full_id_in_a_set']}), "
        f"{figures['bytes_per_total']} bytes per total ({totals:,} totals); "
        f"{figures['apply_us_per_event']} µs per dedupe-and-add; marks on disk: "
        f"{figures['disk_marks_ram_bytes_per_mark']} bytes of RAM and "
        f"{figures['disk_marks_disk_bytes_per_mark']} of disk per mark, "
        f"{figures['disk_marks_us_per_new_mark']} µs of CPU per new mark (in memory: "
        f"{figures['memory_marks_us_per_new_mark']})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
