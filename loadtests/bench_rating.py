"""Rating throughput: the Numba kernel against NumPy and the Decimal oracle, in one run.

    python -m loadtests.bench_rating [--rows N] [--oracle-rows N] [--repeats N]

Prints rows/s per implementation and the kernel's speedup ratios; the last line is
one JSON object with the figures. Single-threaded.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np

from rating import oracle
from rating.money import from_nanos
from rating.plans import parse_price_book
from rating.rater import rate
from rating.table import ChargeTable

PRICE = "0.000025"


def _table() -> ChargeTable:
    book = parse_price_book(
        {
            "meters": [{"id": "m"}],
            "plans": [
                {
                    "id": "p",
                    "currency": "USD",
                    "charges": [{"meter": "m", "model": "per_unit", "unit_price": PRICE}],
                }
            ],
        },
        "bench",
    )
    return ChargeTable.compile(book)


def best_rate(rows: int, repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return rows / best


def numpy_per_unit(table: ChargeTable, charges: np.ndarray, quantity: np.ndarray) -> np.ndarray:
    """The straightforward vectorised version doing the kernel's work: look up each row's
    charge, refuse what would overflow, multiply, round half up at the scale."""
    price = table.unit_price_nanos[charges]
    divisor = table.scale_divisor[charges]
    limit = np.where(price == 0, np.iinfo(np.int64).max,
                     (np.iinfo(np.int64).max - divisor // 2) // np.maximum(price, 1))  # fmt: skip
    if np.any((quantity < 0) | (quantity > limit)):
        raise OverflowError
    amounts: np.ndarray = (quantity * price + divisor // 2) // divisor
    return amounts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--oracle-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    table = _table()
    rng = np.random.default_rng(7)
    quantity = rng.integers(0, 10**9, size=args.rows, dtype=np.int64)
    charges = np.zeros(args.rows, dtype=np.int64)
    rate(table, charges[:10], quantity[:10])  # compile (or load the cache) before timing

    kernel = best_rate(args.rows, args.repeats, lambda: rate(table, charges, quantity))
    numpy = best_rate(args.rows, args.repeats, lambda: numpy_per_unit(table, charges, quantity))
    sample = [int(q) for q in quantity[: args.oracle_rows]]
    price = Decimal(PRICE)
    decimal = best_rate(len(sample), 1, lambda: [oracle.per_unit(q, 0, price) for q in sample])

    amounts = rate(table, charges[: len(sample)], quantity[: len(sample)])
    assert [from_nanos(int(a)) for a in amounts] == [oracle.per_unit(q, 0, price) for q in sample]

    figures = {
        "per_unit": {
            "kernel_rows_per_s": round(kernel),
            "numpy_rows_per_s": round(numpy),
            "decimal_rows_per_s": round(decimal),
            "kernel_vs_numpy": round(kernel / numpy, 2),
            "kernel_vs_decimal": round(kernel / decimal, 1),
        }
    }
    for model, row in figures.items():
        print(
            f"{model:>10}: kernel {row['kernel_rows_per_s']:>14,} rows/s | numpy "
            f"{row['numpy_rows_per_s']:>14,} | decimal {row['decimal_rows_per_s']:>10,} | "
            f"x{row['kernel_vs_numpy']} numpy, x{row['kernel_vs_decimal']} decimal"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
