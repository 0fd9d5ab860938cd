"""Subscriptions and customers to import, from a file (CSV with a header, or a JSON array
of objects, e.g. an export of CRM contracts) or from a request's items: each decodes into
the same input shape and is checked the same way, once, and one bad row rejects the
whole import with errors that name the row and the field, so nothing is half imported."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import msgspec

from rating.currencies import MINOR_UNIT_DIGITS
from rating.period import LAST_DAY, MAX_ANCHOR
from rating.plans import PriceBook
from subscriptions.model import NET_DAYS, Customer, Subscription

SUBSCRIPTION_FIELDS = ("tenant", "subscription", "customer", "plan", "started_at")
CUSTOMER_FIELDS = ("tenant", "customer", "name", "tax_rate")
MAX_TAX_RATE = Decimal(100)
MAX_PAYMENT_TERMS_DAYS = 365

Row = TypeVar("Row", bound=msgspec.Struct)
Parsed = TypeVar("Parsed")


class SubscriptionFileError(ValueError):
    """The file cannot be imported; the message lists every problem found."""


class NewSubscription(msgspec.Struct, forbid_unknown_fields=True):
    """A subscription to import; one already known is replaced."""

    subscription: str
    customer: str
    plan: str
    started_at: str  # a day (midnight UTC) or an ISO 8601 time with offset
    ended_at: str = ""  # exclusive; none by default
    anchor_day: int = 1  # the day of the month its billing periods start on, 1 to 28
    tenant: str = ""  # a file names it; over HTTP, the key's tenant (another is refused)


class NewCustomer(msgspec.Struct, forbid_unknown_fields=True):
    """A customer to import; one already known is replaced."""

    customer: str
    name: str
    tax_rate: Decimal = Decimal(0)  # percent, 0 to 100, at most 4 decimal places: 8.25
    external_id: str = ""  # the CRM's id
    currency: str = ""  # ISO 4217: its subscriptions must be on plans priced in it
    address: str = ""  # the billing address its invoices show
    tax_id: str = ""  # its VAT or tax number
    payment_terms_days: int = NET_DAYS  # days from an invoice's issue to its due day, 0 to 365
    country: str = ""  # ISO 3166-1 alpha-2 (DE, FR): whose tax rate applies; "": tax_rate
    region: str = ""  # where the country's rate depends on it (CA: ON, QC)
    tax_exempt: bool = False
    tenant: str = ""  # a file names it; over HTTP, the key's tenant (another is refused)


# What a field that does not even decode is, in the words its own check would use.
_UNDECODED = {"tax_rate": "is not a percentage from 0 to 100",
              "payment_terms_days": "is not a whole number of days"}  # fmt: skip


def read_subscriptions(path: Path, book: PriceBook) -> list[Subscription]:
    items = _items(path, SUBSCRIPTION_FIELDS)
    return subscriptions_from(str(path), _decoded(items, NewSubscription), book)


def subscriptions_from(
    source: str, items: Sequence[tuple[int, NewSubscription | str]], book: PriceBook
) -> list[Subscription]:
    """Subscriptions from numbered inputs (a file's rows, a request's array items; a text
    in place of one says why it did not decode)."""

    def parse(row: NewSubscription) -> tuple[Subscription | None, list[str]]:
        problems = [f"{name} is empty" for name in SUBSCRIPTION_FIELDS[:4]
                    if not getattr(row, name).strip()]  # fmt: skip
        if row.plan and not book.knows(row.plan):
            problems.append(f"plan {row.plan!r} is not in the price book")
        started = _moment(row.started_at, "started_at", problems)
        ended = _moment(row.ended_at, "ended_at", problems) if row.ended_at.strip() else None
        if started and ended and ended <= started:
            problems.append(f"ended_at {row.ended_at} is not after started_at {row.started_at}")
        if not 1 <= row.anchor_day <= MAX_ANCHOR:
            problems.append(f"anchor_day {row.anchor_day} is not a day from 1 to {MAX_ANCHOR}")
        if problems or started is None:
            return None, problems
        owner = (row.tenant, row.subscription, row.customer, row.plan)
        return Subscription(*owner, started_at=started, ended_at=ended,
                            anchor_day=row.anchor_day), []  # fmt: skip

    return _checked(source, items, "subscriptions", parse, _subscription_key)


def read_customers(path: Path) -> list[Customer]:
    items = _items(path, CUSTOMER_FIELDS)
    return customers_from(str(path), _decoded(items, NewCustomer))


def customers_from(source: str, items: Sequence[tuple[int, NewCustomer | str]]) -> (
    list[Customer]
):  # fmt: skip
    """Customers from numbered inputs, as ``subscriptions_from`` takes them."""

    def parse(row: NewCustomer) -> tuple[Customer | None, list[str]]:
        problems = [f"{name} is empty" for name in CUSTOMER_FIELDS[:2]
                    if not getattr(row, name).strip()]  # fmt: skip
        rate = row.tax_rate
        if not rate.is_finite() or not 0 <= rate <= MAX_TAX_RATE:
            problems.append(f"tax_rate {str(rate)!r} is not a percentage from 0 to 100")
        elif rate.as_tuple().exponent < -4:  # type: ignore[operator]
            problems.append(f"tax_rate {str(rate)!r} has more than 4 decimal places")
        if row.currency and row.currency not in MINOR_UNIT_DIGITS:
            problems.append(f"currency {row.currency!r} is not an ISO 4217 code meterline bills in")
        if not 0 <= row.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS:
            problems.append(f"payment_terms_days {row.payment_terms_days} is not 0 to "
                            f"{MAX_PAYMENT_TERMS_DAYS} days")  # fmt: skip
        if row.country and not re.fullmatch(r"[A-Za-z]{2}", row.country):
            problems.append(f"country {row.country!r} is not a two-letter ISO 3166 code (DE)")
        if problems:
            return None, problems
        return Customer(row.tenant, row.customer, row.name, row.external_id, rate, row.currency,
                        row.address, row.tax_id, row.payment_terms_days, row.country.upper(),
                        row.region.upper(), row.tax_exempt), []  # fmt: skip

    return _checked(source, items, "customers", parse, _customer_key)


def currency_problems(
    rows: Sequence[Subscription], customers: Mapping[tuple[str, str], Customer], book: PriceBook
) -> list[str]:
    """Subscriptions whose plan is priced in another currency than their customer's."""
    problems = []
    for row in rows:
        customer = customers.get((row.tenant, row.customer))
        refused = customer.refuses(book.plan(row.plan).currency) if customer else None
        if refused:
            problems.append(f"{row.tenant}/{row.subscription} on {row.plan}: {refused}")
    return problems


def _subscription_key(row: NewSubscription) -> tuple[str, str]:
    return row.tenant, row.subscription


def _customer_key(row: NewCustomer) -> tuple[str, str]:
    return row.tenant, row.customer


def _moment(text: str, field: str, problems: list[str]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"{field} {text!r} is not a day or time")
        return None
    moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    if not datetime(1970, 1, 1, tzinfo=UTC) <= moment <= datetime.combine(LAST_DAY, time(), UTC):
        problems.append(f"{field} {text} is outside 1970-01-01 to {LAST_DAY}")
        return None
    return moment


def _items(path: Path, fields: tuple[str, ...]) -> list[tuple[int, object]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SubscriptionFileError(f"cannot read {path}: {error}") from None
    if text.lstrip().startswith("["):
        return _json_items(path, text)
    return _csv_items(path, text, fields)


def _decoded(items: Sequence[tuple[int, object]], kind: type[Row]) -> list[tuple[int, Row | str]]:
    """A file's numbered rows as inputs of ``kind`` (an empty value of a field that has a
    default is that default), or, for a row that does not decode, what is wrong with it."""
    defaulted = {f.name for f in msgspec.structs.fields(kind) if not f.required}
    decoded: list[tuple[int, Row | str]] = []
    for number, given in items:
        item = given
        if isinstance(given, dict):
            item = {key: value for key, value in given.items()
                    if not (value == "" and key in defaulted)}  # fmt: skip
        try:
            decoded.append((number, msgspec.convert(item, kind, strict=False)))
        except msgspec.ValidationError as error:
            decoded.append((number, _undecoded(item, error)))
    return decoded


def _undecoded(item: object, error: msgspec.ValidationError) -> str:
    for field, problem in _UNDECODED.items():
        if str(error).endswith(f"`$.{field}`") and isinstance(item, dict):
            return f"{field} {item.get(field)!r} {problem}"
    return str(error)


def _checked(
    source: str,
    items: Sequence[tuple[int, Row | str]],
    noun: str,
    parse: Callable[[Row], tuple[Parsed | None, list[str]]],
    ident: Callable[[Row], tuple[str, str]],
) -> list[Parsed]:
    found, problems, seen = [], [], set()
    for number, row in items:
        if isinstance(row, str):
            problems.append(f"row {number}: {row}")
            continue
        parsed, own = parse(row)
        problems.extend(f"row {number}: {problem}" for problem in own)
        key = ident(row)
        if key in seen:
            problems.append(f"row {number}: {key[0]}/{key[1]} appears twice")
        seen.add(key)
        if parsed is not None:
            found.append(parsed)
    if problems:
        raise SubscriptionFileError(f"{source}: nothing imported:\n  " + "\n  ".join(problems))
    if not found:
        raise SubscriptionFileError(f"{source}: no {noun} in it")
    return found


def _json_items(path: Path, text: str) -> list[tuple[int, object]]:
    try:
        items = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise SubscriptionFileError(f"{path} is not valid JSON: {error}") from None
    return list(enumerate(items, start=1))


def _csv_items(path: Path, text: str, fields: tuple[str, ...]) -> list[tuple[int, object]]:
    reader = csv.DictReader(text.splitlines())
    missing = [name for name in fields if name not in (reader.fieldnames or [])]
    if missing:
        raise SubscriptionFileError(
            f"{path}: the header must name {', '.join(fields)} (missing {', '.join(missing)})"
        )
    # Row numbers as a spreadsheet shows them: the header is row 1. An empty optional
    # column is the same as an absent one.
    return [
        (number, {key: value for key, value in row.items() if value != "" or key in fields})
        for number, row in enumerate(reader, start=2)
    ]
