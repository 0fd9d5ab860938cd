"""Each benchmark in quick mode, once, so that `make bench` cannot rot unnoticed.
Nothing here is timed: only that it runs and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def quick(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m loadtests.<module> ARGS`` and return its last line, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", f"loadtests.{module}", *args],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_the_rating_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    figures = quick("bench_rating", "--rows", "2000", "--oracle-rows", "200", "--repeats", "1")
    assert set(figures) >= {"per_unit", "graduated_4_tiers", "volume_4_tiers", "package"}
    price_seconds = figures.pop("price_command_s")
    assert all(row["kernel_rows_per_s"] > 0 for row in figures.values())
    assert price_seconds > 0


def test_the_pipeline_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    figures = quick(
        "bench_pipeline", "--events", "5000", "--subscriptions", "200", "--latency-seconds", "2",
        "--workers", "2",
    )  # fmt: skip
    assert figures["events"] == 5000 and figures["workers"] == 2
    assert figures["pipeline_events_per_s"] > 0 and figures["raw_consume_events_per_s"] > 0
    assert figures["worker_cpu_us_per_event"] > 0 and figures["record_events"] == 500
    assert figures["latency_events"] > 0 and figures["latency_p99_s"] >= figures["latency_p50_s"]


def test_the_state_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    figures = quick("bench_state", "--events", "2000", "--subscriptions", "51",
                    "--disk-marks", "30000")  # fmt: skip
    assert figures["events"] == 2000 and figures["totals"] == 102
    assert figures["bytes_per_mark"] > 16  # the digest alone is 16 bytes
    assert figures["disk_marks"] == 30000 and figures["disk_marks_disk_bytes_per_mark"] > 0
    assert 0 < figures["disk_marks_ram_bytes_per_mark"] < figures["bytes_per_mark"]


def test_the_ingest_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    figures = quick("bench_ingest", "--events", "3000", "--batch", "500", "--connections", "2")
    assert figures["events"] == 3000
    assert figures["http_events_per_s"] > 0 and figures["sdk_kafka_events_per_s"] > 0
    assert figures["http_request_p99_s"] >= figures["http_request_p50_s"] > 0
    assert figures["gateway_cpu_us_per_event"] > 0


def test_the_soak_runs_and_checks_every_total() -> None:
    figures = quick("soak", "--minutes", "0.1", "--rate", "500", "--subscriptions", "100",
                    "--report-seconds", "2")  # fmt: skip
    assert figures["totals_match"] and figures["totals_checked"] > 0
    assert figures["reports"] >= 2 and figures["worker_rss_last_mb"] > 0


def test_the_store_benchmark_runs_in_quick_mode() -> None:
    figures = quick("bench_store", "--subscriptions", "500", "--queries", "20",
                    "--close-subscriptions", "50")  # fmt: skip
    assert figures["rated_rows"] == 2000 and figures["usage_query_p99_ms"] > 0
    assert figures["close_invoices_per_second"] > 0


def test_make_bench_writes_benchmarks_md_with_medians(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    quick("all", "--runs", "2", "--only", "bench_state", "--quick", "--output", str(output))
    text = output.read_text()
    assert "## bench_state" in text and "| bytes_per_mark |" in text
    assert "Machine: " in text and "python -m loadtests.bench_state" in text


def test_the_batch_step_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    figures = quick("bench_batch", "--events", "3000", "--subscriptions", "100", "--runs", "1")
    assert figures["events"] == 3000
    assert figures["step_cpu_us_per_event"] > 0 and figures["decode_cpu_us_per_event"] > 0


def test_the_entitlements_benchmark_runs_and_ends_with_its_figures_as_json() -> None:
    figures = quick("bench_entitlements", "--subscriptions", "300", "--requests", "200",
                    "--staleness-samples", "3")  # fmt: skip
    assert figures["subscriptions"] == 300 and figures["requests"] == 200
    assert figures["entitlement_p99_ms"] >= figures["entitlement_p50_ms"] > 0
    assert figures["baseline_p99_ms"] >= figures["baseline_p50_ms"] > 0
    assert 0 < figures["staleness_p50_s"] <= figures["staleness_p99_s"]
    assert 0 < figures["hard_limit_deny_s"] <= figures["hard_limit_refused_s"]
