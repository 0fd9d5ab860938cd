"""The price book: meters and plans read from YAML into validated, frozen objects.

A bad price book is reported as ``PriceBookError`` naming the file, the plan,
the charge and what is wrong, so a person can fix it without a traceback.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import MoneyError, to_nanos

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class PriceBookError(ValueError):
    """The price book cannot be loaded; the message says where and why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Meter(_Frozen):
    id: str = Field(pattern=IDENTIFIER)
    unit: str = "unit"
    scale: int = Field(default=0, ge=0, le=9, description="decimal places of quantities")


def _nano_price(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("a price cannot be negative")
    try:
        to_nanos(value)
    except MoneyError as error:
        raise ValueError(str(error)) from error
    return value


NanoPrice = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_nano_price)]


class PerUnit(_Frozen):
    model: Literal["per_unit"]
    meter: str
    unit_price: NanoPrice


Charge = Annotated[PerUnit, Field(discriminator="model")]


class Plan(_Frozen):
    id: str = Field(pattern=IDENTIFIER)
    name: str = ""
    currency: str
    interval: Literal["month"] = "month"
    charges: tuple[Charge, ...] = Field(min_length=1)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in MINOR_UNIT_DIGITS:
            raise ValueError(f"unknown currency {value!r} (expected an ISO 4217 code such as USD)")
        return value

    @property
    def minor_digits(self) -> int:
        return MINOR_UNIT_DIGITS[self.currency]

    def charge_for(self, meter: str) -> Charge | None:
        return next((charge for charge in self.charges if charge.meter == meter), None)


class PriceBook(_Frozen):
    meters: tuple[Meter, ...] = Field(min_length=1)
    plans: tuple[Plan, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PriceBook:
        _require_unique("meter", [meter.id for meter in self.meters])
        _require_unique("plan", [plan.id for plan in self.plans])
        known = {meter.id for meter in self.meters}
        for plan in self.plans:
            _require_unique(f"plan {plan.id!r}: meter", [c.meter for c in plan.charges])
            for charge in plan.charges:
                if charge.meter not in known:
                    raise ValueError(
                        f"plan {plan.id!r}: charge on meter {charge.meter!r}, "
                        "which is not declared under meters"
                    )
        return self

    def plan(self, plan_id: str) -> Plan:
        for plan in self.plans:
            if plan.id == plan_id:
                return plan
        raise KeyError(plan_id)

    def meter(self, meter_id: str) -> Meter:
        for meter in self.meters:
            if meter.id == meter_id:
                return meter
        raise KeyError(meter_id)


def _require_unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for identifier in ids:
        if identifier in seen:
            raise ValueError(f"{what} {identifier!r} is declared twice")
        seen.add(identifier)


_CONTAINERS = {"plans": "plan", "charges": "charge", "meters": "meter"}


def _describe_location(document: object, location: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into "plan 'x', charge 2 (meter 'y'), field"."""
    words: list[str] = []
    node = document
    for index, step in enumerate(location):
        previous = location[index - 1] if index else None
        child = _child(node, step)
        following = location[index + 1] if index + 1 < len(location) else None
        if isinstance(step, int) and previous in _CONTAINERS:
            item = child if isinstance(child, dict) else {}
            if previous == "charges":
                words.append(f"charge {step + 1} (meter {item.get('meter', '?')!r})")
            else:
                words.append(f"{_CONTAINERS[previous]} {item.get('id', step)!r}")
        elif step in _CONTAINERS and isinstance(following, int):
            pass  # named by the item that follows
        elif isinstance(node, dict) and node.get("model") == step:
            pass  # the tag of a price model, not a field
        else:
            words.append(str(step))
        node = child
    return ", ".join(words)


def _child(node: object, step: int | str) -> object:
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    if isinstance(node, dict):
        return node.get(step)
    return None


def parse_price_book(document: object, source: str) -> PriceBook:
    try:
        return PriceBook.model_validate(document)
    except ValidationError as error:
        found = error.errors(include_url=False)
        locations = [tuple(problem["loc"]) for problem in found]
        problems = []
        for problem in found:
            loc = tuple(problem["loc"])
            if any(other[: len(loc)] == loc and other != loc for other in locations):
                continue  # a container failing only because an item inside it failed
            where = _describe_location(document, loc)
            message = problem["msg"].removeprefix("Value error, ")
            problems.append(f"  {where}: {message}" if where else f"  {message}")
        raise PriceBookError(f"{source}: invalid price book\n" + "\n".join(problems)) from None


def load_price_book(path: Path) -> PriceBook:
    try:
        text = path.read_text()
    except OSError as error:
        raise PriceBookError(f"{path}: cannot read the price book ({error.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PriceBookError(f"{path}: not valid YAML ({error})") from None
    return parse_price_book(document, str(path))
