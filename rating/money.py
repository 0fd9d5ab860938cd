"""Fixed-point money: amounts are integers of nano-units (1e-9) of a currency.

Kernels see only these integers; Decimal appears at the edges (price books,
ClickHouse, people). Converting a price that is not a whole number of
nano-units is an error rather than a silent rounding.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

NANO_DIGITS = 9
NANOS_PER_UNIT = 10**NANO_DIGITS
INT64_MAX = 2**63 - 1
NANO = Decimal(1).scaleb(-NANO_DIGITS)


class MoneyError(ValueError):
    """A value cannot be represented exactly as nano-units."""


def to_nanos(amount: Decimal) -> int:
    nanos = amount * NANOS_PER_UNIT
    if nanos != nanos.to_integral_value():
        raise MoneyError(f"{amount} has more than {NANO_DIGITS} decimal places")
    value = int(nanos)
    if abs(value) > INT64_MAX:
        raise MoneyError(f"{amount} is too large for a 64-bit nano-unit amount")
    return value


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-NANO_DIGITS)


def round_to_minor_unit(amount: Decimal, minor_digits: int) -> Decimal:
    """The declared rule for invoice lines: round half up (away from zero) to the minor unit."""
    return amount.quantize(Decimal(1).scaleb(-minor_digits), rounding=ROUND_HALF_UP)


def plain(value: Decimal) -> str:
    """Positional notation, never an exponent: 0.000000000 rather than 0E-9."""
    return format(value, "f")


def trimmed(value: Decimal) -> str:
    """A quantity without trailing zeros: 1.5, not 1.500000000."""
    return plain(value.normalize()) if value else "0"


def exact_money(value: Decimal, minor_digits: int) -> str:
    """An exact amount with at least the currency's minor digits: 0.40, 7.8057."""
    places = max(minor_digits, -int(value.normalize().as_tuple().exponent))
    return plain(value.quantize(Decimal(1).scaleb(-places)))
