"""Every benchmark, several runs each, and BENCHMARKS.md written from the results.

    python -m loadtests.all [--runs 3] [--output BENCHMARKS.md]      (what `make bench` runs)

Each benchmark is its own process (``python -m loadtests.NAME``) and ends with one JSON
line; a figure here is the median of the runs, shown with every run's value so the
spread on a shared, noisy machine is visible. Ratios come from each benchmark's in-run
baseline (the Decimal oracle and NumPy for rating, raw consume for the pipeline, raw
produce for ingest, a set of full ids for the dedupe state, the engine's own insert and
`SELECT 1` for the store, the gateway's bare HTTP path for entitlements).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress


@dataclass(frozen=True)
class Benchmark:
    module: str
    arguments: tuple[str, ...]
    what: str

    @property
    def command(self) -> str:
        return " ".join(("python -m", f"loadtests.{self.module}", *self.arguments))


BENCHMARKS = (
    Benchmark("bench_rating", (), "Rating kernels against NumPy and the Decimal oracle "
              "(rows/s, single-threaded; each run is itself the best of three), and one "
              "`meterline price` call as a user runs it (s)"),
    Benchmark("bench_state", (), "Dedupe and total state: memory per entry, time per event"),
    Benchmark("bench_batch", (), "The worker's batch step and store write, CPU per event, "
              "against decoding alone"),
    Benchmark("bench_ingest", (), "HTTP gateway and SDK Kafka mode against raw produce"),
    *(
        Benchmark("bench_pipeline",
                  ("--subscriptions", str(subscriptions), "--record-events", str(size),
                   "--events", str(1_000_000 if size > 1 else 200_000)),
                  f"Topic to queryable totals over {subscriptions:,} subscriptions in records "
                  f"of {size} event{'s' if size > 1 else ''}: worker CPU per event, events/s "
                  "against raw consume, produce-to-queryable latency at half load")
        for size in (500, 1) for subscriptions in (1_000, 100_000, 1_000_000)
    ),
    Benchmark("bench_entitlements", (), "Entitlements from the worker's live usage through "
              "`meterline serve` at 1M subscriptions: latency against the gateway's bare HTTP "
              "path, serve's CPU per request, staleness from event to answer, and a hard "
              "limit's deny and refusal"),
    Benchmark("bench_store", (), "Rated totals written against the engine's own insert; one "
              "subscription's usage among 1M against SELECT 1; closing invoices"),
)  # fmt: skip


# Sizes for a smoke run (``--quick``), which checks that the report is written, not what
# it measures: the test suite runs one.
QUICK = {"bench_state": ("--events", "20000", "--subscriptions", "1000", "--disk-marks", "20000")}


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, value in figures.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{name}"] = value
    return flat


def run_once(benchmark: Benchmark) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", f"loadtests.{benchmark.module}", *benchmark.arguments],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{benchmark.module} failed:\n{done.stderr[-2000:]}")
    return flatten(json.loads(done.stdout.strip().splitlines()[-1]))


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} × {model}, {memory:.0f} GiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")  # fmt: skip


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def render(
    results: dict[str, list[dict[str, float]]], runs: int, benchmarks: Sequence[Benchmark]
) -> str:
    lines = [
        "# meterline benchmarks",
        "",
        f"Written by `make bench` (`python -m loadtests.all --runs {runs}`) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {machine()}. The broker, the worker, the gateway and the load generator "
        "share these cores; the host is shared too, so absolute rates move from run to "
        "run, and the in-run ratios are the figures to compare.",
        "",
    ]
    for benchmark in benchmarks:
        samples = results.get(benchmark.command)
        if not samples:
            continue
        heading = " ".join((benchmark.module, *benchmark.arguments))
        lines += [f"## {heading}", "", benchmark.what + ".", "", f"`{benchmark.command}`",
                  "",
                  "| figure | median | runs |", "| --- | --- | --- |"]  # fmt: skip
        for name in samples[0]:
            values = [sample[name] for sample in samples if name in sample]
            median = statistics.median(values)
            lines.append(
                f"| {name} | {_number(median)} | {', '.join(_number(v) for v in values)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--only", nargs="*", default=None, help="benchmark modules to run")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: check the report is written (tests)"
    )
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if args.only is None or b.module in args.only]
    if args.quick:
        chosen = [replace(b, arguments=b.arguments + QUICK.get(b.module, ())) for b in chosen]
    results: dict[str, list[dict[str, float]]] = {}  # by command
    console = Console(stderr=True)
    with Progress(console=console) as progress:
        task = progress.add_task("benchmarks", total=len(chosen) * args.runs)
        for benchmark in chosen:
            for run in range(1, args.runs + 1):
                progress.update(task, description=f"{benchmark.module}, run {run}/{args.runs}")
                results.setdefault(benchmark.command, []).append(run_once(benchmark))
                progress.advance(task)
    args.output.write_text(render(results, args.runs, chosen))
    console.print(f"wrote {args.output}")
    print(json.dumps({name: len(samples) for name, samples in results.items()}))


if __name__ == "__main__":
    main()
