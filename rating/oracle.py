"""The reference: every price model in plain ``decimal.Decimal``, written independently of
the kernels, so that the kernels can be checked against it row by row."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

from rating.money import NANO

# Enough digits that no product of a 64-bit quantity and a price is ever rounded.
_PRECISION = 80


def per_unit(quantity: int, scale: int, unit_price: Decimal) -> Decimal:
    with localcontext() as context:
        context.prec = _PRECISION
        units = Decimal(quantity).scaleb(-scale)
        return (units * unit_price).quantize(NANO, rounding=ROUND_HALF_UP)
