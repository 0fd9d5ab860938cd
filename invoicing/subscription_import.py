"""Reading subscriptions from a file (CSV with a header, or a JSON array of objects), e.g. an
export of CRM contracts: every row is checked, and one bad row rejects the file with
errors that name the row and the field, so nothing is half imported."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from invoicing.store import SubscriptionRow
from rating.plans import PriceBook

FIELDS = ("tenant", "subscription", "customer", "plan", "started_at")


class SubscriptionFileError(ValueError):
    """The file cannot be imported; the message lists every problem found."""


class _Row(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str
    subscription: str
    customer: str
    plan: str
    started_at: str  # a day (2026-10-01, midnight UTC) or an ISO 8601 time with offset


def read_subscriptions(path: Path, book: PriceBook) -> list[SubscriptionRow]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SubscriptionFileError(f"cannot read {path}: {error}") from None
    items = _json_items(path, text) if text.lstrip().startswith("[") else _csv_items(path, text)
    rows, problems, seen = [], [], set()
    for number, item in items:
        try:
            row = msgspec.convert(item, _Row, strict=False)
        except msgspec.ValidationError as error:
            problems.append(f"row {number}: {error}")
            continue
        problems.extend(f"row {number}: {problem}" for problem in _problems(row, book))
        if (row.tenant, row.subscription) in seen:
            problems.append(f"row {number}: {row.tenant}/{row.subscription} appears twice")
        seen.add((row.tenant, row.subscription))
        try:
            started = datetime.fromisoformat(row.started_at)
        except ValueError:
            problems.append(f"row {number}: started_at {row.started_at!r} is not a day or time")
            continue
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        rows.append(SubscriptionRow(row.tenant, row.subscription, row.customer, row.plan,
                                    started.astimezone(UTC)))  # fmt: skip
    if problems:
        raise SubscriptionFileError(f"{path}: nothing imported:\n  " + "\n  ".join(problems))
    if not rows:
        raise SubscriptionFileError(f"{path}: no subscriptions in the file")
    return rows


def _problems(row: _Row, book: PriceBook) -> list[str]:
    problems = [f"{name} is empty" for name in FIELDS[:4] if not getattr(row, name).strip()]
    if row.plan and row.plan not in book.versions:
        problems.append(f"plan {row.plan!r} is not in the price book")
    return problems


def _json_items(path: Path, text: str) -> list[tuple[int, object]]:
    try:
        items = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise SubscriptionFileError(f"{path} is not valid JSON: {error}") from None
    return list(enumerate(items, start=1))


def _csv_items(path: Path, text: str) -> list[tuple[int, object]]:
    reader = csv.DictReader(text.splitlines())
    missing = [name for name in FIELDS if name not in (reader.fieldnames or [])]
    if missing:
        raise SubscriptionFileError(
            f"{path}: the header must name {', '.join(FIELDS)} (missing {', '.join(missing)})"
        )
    # Row numbers as a spreadsheet shows them: the header is row 1.
    return [(number, dict(row)) for number, row in enumerate(reader, start=2)]
