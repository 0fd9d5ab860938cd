"""Rating throughput per price model: the Numba kernel against a straightforward NumPy
implementation and the Decimal oracle, all in one run.

    python -m loadtests.bench_rating [--rows N] [--oracle-rows N] [--repeats N]

Prints rows/s for each implementation and the kernel's speedup ratios, then how long one
``meterline price`` call takes as a user runs it (a new process: imports, price book,
the interpreted kernels); the last line is one JSON object with the figures per model
and ``price_command_s``. Single-threaded; best of --repeats.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from rating import oracle
from rating.loading import parse_price_book
from rating.money import from_nanos, to_nanos
from rating.plans import PriceBook
from rating.rater import rate
from rating.table import ChargeTable

FOUR_TIERS = [
    {"up_to": 10_000, "unit_price": "0.001"},
    {"up_to": 100_000, "unit_price": "0.0008", "flat_fee": "2"},
    {"up_to": 1_000_000, "unit_price": "0.0005"},
    {"unit_price": "0.0002"},
]
MODELS: dict[str, dict[str, Any]] = {
    "per_unit": {"model": "per_unit", "unit_price": "0.000025"},
    "graduated_4_tiers": {"model": "graduated", "tiers": FOUR_TIERS},
    "volume_4_tiers": {"model": "volume", "tiers": FOUR_TIERS},
    "package": {"model": "package", "package_size": 1000, "package_price": "0.5"},
    "allowance": {"model": "allowance", "included": 50_000, "overage_price": "0.0004"},
}


def book_of(charge: dict[str, Any]) -> PriceBook:
    return parse_price_book(
        {"meters": [{"id": "m"}],
         "plans": [{"id": "p", "currency": "USD", "charges": [{"meter": "m", **charge}]}]},
        "bench",
    )  # fmt: skip


def numpy_rate(charge: dict[str, Any], quantity: np.ndarray) -> np.ndarray:
    """What one would write with NumPy alone (scale 0, no minimum or maximum)."""
    model = charge["model"]
    if model == "per_unit":
        result: np.ndarray = quantity * to_nanos(Decimal(charge["unit_price"]))
        return result
    if model == "package":
        blocks = -(-quantity // charge["package_size"])
        return np.asarray(blocks * to_nanos(Decimal(charge["package_price"])))
    if model == "allowance":
        overage = np.maximum(quantity - charge["included"], 0)
        return np.asarray(overage * to_nanos(Decimal(charge["overage_price"])))
    tiers = charge["tiers"]
    lowers = np.array([0] + [t["up_to"] for t in tiers[:-1]], dtype=np.int64)
    prices = np.array([to_nanos(Decimal(t["unit_price"])) for t in tiers], dtype=np.int64)
    flats = np.array([to_nanos(Decimal(t.get("flat_fee", "0"))) for t in tiers], dtype=np.int64)
    tier = np.maximum(np.searchsorted(lowers, quantity, side="left") - 1, 0)
    if model == "volume":
        return np.where(quantity > 0, quantity * prices[tier] + flats[tier], 0)
    widths = np.diff(lowers)
    below = np.concatenate(([0], np.cumsum(widths * prices[:-1] + flats[:-1])))
    partial = (quantity - lowers[tier]) * prices[tier]
    return np.where(quantity > 0, below[tier] + flats[tier] + partial, 0)


def best_rate(rows: int, repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return rows / best


def measure(name: str, charge: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    book = book_of(charge)
    table = ChargeTable.compile(book)
    quantity = np.random.default_rng(7).integers(0, 2_000_000, size=args.rows, dtype=np.int64)
    charges = np.zeros(args.rows, dtype=np.int64)
    rate(table, charges[:10], quantity[:10])  # compile (or load the cache) before timing
    sample = quantity[: args.oracle_rows]
    kernel_sample = rate(table, charges[: sample.size], sample)
    definition = book.plans[0].charges[0]
    oracle_sample = [oracle.rate_charge(definition, int(q), 0).amount for q in sample]
    if [from_nanos(int(a)) for a in kernel_sample] != oracle_sample:
        raise SystemExit(f"{name}: the kernel disagrees with the Decimal oracle")
    if not np.array_equal(numpy_rate(charge, sample), kernel_sample):
        raise SystemExit(f"{name}: the NumPy baseline disagrees with the kernel")

    kernel = best_rate(args.rows, args.repeats, lambda: rate(table, charges, quantity))
    numpy = best_rate(args.rows, args.repeats, lambda: numpy_rate(charge, quantity))
    decimal = best_rate(
        sample.size, 1, lambda: [oracle.rate_charge(definition, int(q), 0) for q in sample]
    )
    return {
        "kernel_rows_per_s": round(kernel),
        "numpy_rows_per_s": round(numpy),
        "decimal_rows_per_s": round(decimal),
        "kernel_vs_numpy": round(kernel / numpy, 2),
        "kernel_vs_decimal": round(kernel / decimal, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows per model")
    parser.add_argument("--oracle-rows", type=int, default=20_000, help="Decimal sample size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    args = parser.parse_args()
    figures = {}
    for name, charge in MODELS.items():
        row = figures[name] = measure(name, charge, args)
        print(
            f"{name:>18}: kernel {row['kernel_rows_per_s']:>13,.0f} rows/s | numpy "
            f"{row['numpy_rows_per_s']:>13,.0f} | decimal {row['decimal_rows_per_s']:>9,.0f} | "
            f"x{row['kernel_vs_numpy']} numpy, x{row['kernel_vs_decimal']} decimal",
            flush=True,
        )
    price_seconds = price_command_seconds(args.repeats)
    print(f"meterline price: {price_seconds:.3f} s per call", flush=True)
    print(json.dumps({**figures, "price_command_s": round(price_seconds, 3)}))


def price_command_seconds(repeats: int) -> float:
    """Wall time of one ``meterline price`` on the demo's book, best of ``repeats``."""
    command = [sys.executable, "-m", "meterline.cli", "price", "--plan", "growth",
               "--meter", "api_calls", "--quantity", "123456"]  # fmt: skip
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        best = min(best, time.perf_counter() - began)
    return best


if __name__ == "__main__":
    main()
