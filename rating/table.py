"""A price book compiled into flat arrays that the kernels index by charge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rating.money import to_nanos
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
        )

    def charge_of(self, plan: str, meter: str) -> int | None:
        return self.index.get((plan, meter))
