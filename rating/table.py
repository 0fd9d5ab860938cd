"""A price book compiled into flat arrays that the kernels index by charge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rating.money import INT64_MAX, to_nanos
from rating.plans import PriceBook


@dataclass(frozen=True)
class ChargeRef:
    plan: str
    meter: str


@dataclass(frozen=True)
class ChargeTable:
    refs: tuple[ChargeRef, ...]
    index: dict[tuple[str, str], int]
    unit_price_nanos: np.ndarray
    scale_divisor: np.ndarray
    max_quantity: np.ndarray

    @classmethod
    def compile(cls, book: PriceBook) -> ChargeTable:
        refs: list[ChargeRef] = []
        prices: list[int] = []
        divisors: list[int] = []
        for plan in book.plans:
            for charge in plan.charges:
                refs.append(ChargeRef(plan.id, charge.meter))
                prices.append(to_nanos(charge.unit_price))
                divisors.append(10 ** book.meter(charge.meter).scale)
        return cls(
            refs=tuple(refs),
            index={(ref.plan, ref.meter): position for position, ref in enumerate(refs)},
            unit_price_nanos=np.asarray(prices, dtype=np.int64),
            scale_divisor=np.asarray(divisors, dtype=np.int64),
            max_quantity=np.asarray(
                [_max_quantity(p, d) for p, d in zip(prices, divisors, strict=True)],
                dtype=np.int64,
            ),
        )

    def charge_of(self, plan: str, meter: str) -> int | None:
        return self.index.get((plan, meter))


def _max_quantity(price_nanos: int, divisor: int) -> int:
    """The largest quantity q with q * price + divisor // 2 <= INT64_MAX."""
    if price_nanos == 0:
        return INT64_MAX
    return (INT64_MAX - divisor // 2) // price_nanos
