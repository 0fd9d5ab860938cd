"""Each benchmark in quick mode, once, so that `make bench` cannot rot unnoticed.
Nothing here is timed: only that it runs and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_rating_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_rating", "--rows", "2000",
         "--oracle-rows", "200", "--repeats", "1"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) >= {"per_unit", "graduated_4_tiers", "volume_4_tiers", "package"}
    assert all(row["kernel_rows_per_s"] > 0 for row in figures.values())
