"""A subscription's price revision by a percentage (a contract's yearly uplift, a
negotiated discount): every price of its plan times (1 + percent/100), rounded half up to
the nano-unit, as a plan of its own named ``<plan>@<+|-><percent>%`` ("pro@+5%").

A revised plan is an ordinary plan to everything downstream: the worker rates it with the
same kernels, totals under it are kept apart from the list-price plan's, and fees and
commitments are prorated by day to it. It follows the list plan's versions: "pro@+5%" on
a day is version N of "pro" on that day, revised. Every pricing model is linear in its
prices, so revising the prices revises every amount, with one rounding per price.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

MARK = "@"  # not allowed in a plan id, so a revised plan's name never collides with one
MAX_PLACES = 4
MAX_PERCENT = Decimal(1000)  # an uplift beyond 11x the list price is a typo, not a contract
_NANO = Decimal("1e-9")

# Every field of a plan that holds an amount of money; test_revision checks this against
# the price book's models, so a price field added later cannot be left unrevised.
PRICE_FIELDS = frozenset(
    {"unit_price", "flat_fee", "package_price", "overage_price", "minimum", "maximum",
     "amount", "commitment"}
)  # fmt: skip


class RevisionError(ValueError):
    """The revision cannot be made; the message says why."""


def check_percent(percent: Decimal) -> Decimal:
    if not percent.is_finite() or not -100 < percent <= MAX_PERCENT:
        raise RevisionError(f"a revision is above -100% and at most +{MAX_PERCENT}%; got {percent}")
    if percent != percent.quantize(Decimal(1).scaleb(-MAX_PLACES)):
        raise RevisionError(f"a revision has at most {MAX_PLACES} decimal places; got {percent}")
    if percent == 0:
        raise RevisionError("a revision of 0% changes no price")
    return percent


def revised_id(plan_id: str, percent: Decimal) -> str:
    """The plan ``plan_id`` (itself perhaps revised) revised by ``percent`` on top: two
    revisions compound into one, so prices are rounded once."""
    base, earlier = split(plan_id)
    combined = ((100 + earlier) * (100 + percent) / 100 - 100).normalize()
    if combined == 0:
        return base
    return f"{base}{MARK}{combined:+f}%"


def split(plan_id: str) -> tuple[str, Decimal]:
    """(list plan, percent) of a plan id; the percent is 0 for a list plan. Raises
    ``RevisionError`` for a malformed revision."""
    base, mark, revision = plan_id.partition(MARK)
    if not mark:
        return plan_id, Decimal(0)
    try:
        if revision[:1] not in "+-" or not revision.endswith("%"):
            raise InvalidOperation
        percent = Decimal(revision[:-1])
    except InvalidOperation:
        raise RevisionError(
            f"{plan_id!r}: a revised plan is named like pro@+5% or pro@-2.5%"
        ) from None
    return base, percent


def revised_prices(plan: dict[str, Any], percent: Decimal) -> dict[str, Any]:
    """A plan's fields (``model_dump``) with every price revised by ``percent``."""
    revised: dict[str, Any] = _revise(plan, 1 + percent / 100)
    return revised


def _revise(value: Any, factor: Decimal) -> Any:
    if isinstance(value, dict):
        return {name: _price(field, factor) if name in PRICE_FIELDS else _revise(field, factor)
                for name, field in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return [_revise(item, factor) for item in value]
    return value


def _price(value: Decimal | None, factor: Decimal) -> Decimal | None:
    if value is None:
        return None
    return (value * factor).quantize(_NANO, rounding=ROUND_HALF_UP).normalize()
