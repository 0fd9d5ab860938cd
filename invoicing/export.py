"""Invoices for billing to read: JSON (decimal strings, never floats), CSV (one row per
line), and HTML (one printable page per invoice)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import jinja2
import msgspec

from base.events import group_label
from invoicing.invoice import (
    CREDIT,
    DISCOUNT,
    DRAFT,
    FIXED_FEE,
    TOP_UP,
    TRUE_UP,
    USAGE,
    Invoice,
    InvoiceLine,
    Party,
)
from rating.currencies import MINOR_UNIT_DIGITS
from rating.money import exact_money, plain, round_to_minor_unit, trimmed

FORMATS = ("json", "csv", "html")
_KINDS = {USAGE: "usage", FIXED_FEE: "fixed fee", TRUE_UP: "commitment true-up",
          DISCOUNT: "discount", CREDIT: "prepaid credit", TOP_UP: "credit top-up"}  # fmt: skip


def money(value: Decimal, currency: str) -> str:
    """An amount at its currency's minor unit: 12.30, not 12.300000000."""
    return plain(round_to_minor_unit(value, MINOR_UNIT_DIGITS.get(currency, 2)))


def exact(value: Decimal, currency: str) -> str:
    """An exact amount (a tier's), at least to the minor unit: 0.40, 7.8057."""
    return exact_money(value, MINOR_UNIT_DIGITS.get(currency, 2))


def kind_label(line: InvoiceLine, period: date) -> str:
    label = _KINDS.get(line.kind, line.kind)
    return f"adjustment ({label})" if line.is_adjustment_on(period) else label


def _party(party: Party) -> dict[str, str]:
    return {"name": party.name, "address": party.address, "tax_id": party.tax_id}


def as_dict(invoice: Invoice) -> dict[str, Any]:
    cur = invoice.currency
    return {
        "id": invoice.invoice_id,
        "number": invoice.number_label,
        "issued_on": invoice.issued_on.isoformat() if invoice.issued_on else None,
        "due_on": invoice.due_on.isoformat() if invoice.due_on else None,
        "seller": _party(invoice.seller),
        "bill_to": _party(invoice.bill_to),
        "status": invoice.status,
        "revision": invoice.revision,
        "tenant": invoice.tenant,
        "subscription": invoice.subscription,
        "customer": {"id": invoice.customer, "name": invoice.customer_name,
                     "external_id": invoice.external_id},
        "period": f"{invoice.period:%Y-%m}",
        "billing_from": invoice.billing.start.isoformat(),
        "billing_until": invoice.billing.end.isoformat(),  # exclusive
        "currency": cur,
        "tax_rate_percent": trimmed(invoice.tax_rate),
        "tax_rule": invoice.tax_rule,
        "subtotal": money(invoice.subtotal, cur),
        "tax": money(invoice.tax, cur),
        "total": money(invoice.total, cur),
        "computed_at": invoice.computed_at.isoformat() if invoice.computed_at else None,
        "finalized_at": invoice.finalized_at.isoformat() if invoice.finalized_at else None,
        "lines": [
            {
                "line": number,
                "kind": line.kind,
                "adjustment": line.is_adjustment_on(invoice.period),
                "applies_to": f"{line.applies_to:%Y-%m}",
                "item": line.item,
                "group": msgspec.json.decode(line.group) if line.group else None,
                "plan": line.plan,
                "plan_version": line.plan_version,
                "description": line.description,
                "quantity": trimmed(line.quantity),
                "unit": line.unit,
                "rated": plain(line.rated),
                "amount": money(line.amount, cur),
                "tax": money(line.tax, cur),
                "tax_rule": invoice.tax_rule,
                "tiers": [
                    {"label": part.label, "units": trimmed(part.units),
                     "unit_price": plain(part.unit_price), "flat_fee": plain(part.flat_fee),
                     "amount": plain(part.amount)}
                    for part in line.breakdown
                ],
            }
            for number, line in enumerate(invoice.lines, start=1)
        ],
    }  # fmt: skip


def to_json(invoices: Sequence[Invoice]) -> str:
    return msgspec.json.format(msgspec.json.encode([as_dict(i) for i in invoices])).decode()


CSV_HEADER = (
    "invoice_id", "status", "tenant", "subscription", "customer", "external_id", "period",
    "line", "kind", "applies_to", "plan", "plan_version", "item", "group", "description",
    "quantity", "unit", "currency", "rated", "amount", "tax_rate_percent", "tax", "tax_rule",
)  # fmt: skip


def to_csv(invoices: Sequence[Invoice]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for invoice in invoices:
        for number, line in enumerate(invoice.lines, start=1):
            writer.writerow(
                [invoice.invoice_id, invoice.status, invoice.tenant, invoice.subscription,
                 invoice.customer, invoice.external_id, f"{invoice.period:%Y-%m}", number,
                 kind_label(line, invoice.period), f"{line.applies_to:%Y-%m}", line.plan,
                 line.plan_version, line.item, group_label(line.group), line.description,
                 trimmed(line.quantity), line.unit, invoice.currency, plain(line.rated),
                 money(line.amount, invoice.currency), trimmed(invoice.tax_rate),
                 money(line.tax, invoice.currency), invoice.tax_rule]
            )  # fmt: skip
    return out.getvalue()


def templates(package: str) -> jinja2.Environment:
    """The Jinja templates of ``package``'s templates/ folder, as every page meterline
    renders takes them: escaped, strict about undefined names, without stray blank lines."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


environment = templates("invoicing")
environment.filters.update(money=money, exact=exact, quantity=trimmed, plain=plain)


def to_html(invoices: Sequence[Invoice], issuer: str = "meterline") -> str:
    return environment.get_template("invoices.html.j2").render(
        invoices=invoices,
        issuer=issuer,
        draft=DRAFT,
        kind_label=kind_label,
        one_day=timedelta(days=1),
    )


def render(invoices: Sequence[Invoice], fmt: str) -> str:
    if fmt == "json":
        return to_json(invoices)
    if fmt == "csv":
        return to_csv(invoices)
    return to_html(invoices)
