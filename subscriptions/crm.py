"""Customers in the bulk CSV shapes of Salesforce and HubSpot, so that one company is one
record on both sides: exported from meterline to load into the CRM, and a CRM's export
imported back. Pure: text in, text out.

The CRM's own id is meterline's ``external_id``; meterline's customer id travels in a
custom field the CRM is told is an external id (Salesforce: ``Meterline_Customer_Id__c``,
marked External ID and Unique; HubSpot: a unique single-line property). docs/crm.md lists
the custom fields to create.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from subscriptions.imports import NewCustomer
from subscriptions.model import Customer


@dataclass(frozen=True)
class Shape:
    """A CRM's columns, each named for the customer field it holds, in file order."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (CRM column, Customer field)

    @property
    def header(self) -> list[str]:
        return [column for column, _ in self.columns]


SALESFORCE = Shape("salesforce", (
    ("Id", "external_id"),
    ("Meterline_Customer_Id__c", "customer"),
    ("Name", "name"),
    ("BillingStreet", "address"),
    ("BillingCountryCode", "country"),
    ("BillingStateCode", "region"),
    ("CurrencyIsoCode", "currency"),
    ("Meterline_Tax_Id__c", "tax_id"),
    ("Meterline_Tax_Rate__c", "tax_rate"),
    ("Meterline_Payment_Terms_Days__c", "payment_terms_days"),
    ("Meterline_Tax_Exempt__c", "tax_exempt"),
))  # fmt: skip
HUBSPOT = Shape("hubspot", (
    ("Record ID", "external_id"),
    ("Meterline customer ID", "customer"),
    ("Company name", "name"),
    ("Street Address", "address"),
    ("Country/Region Code", "country"),
    ("State/Region Code", "region"),
    ("Currency", "currency"),
    ("Meterline tax ID", "tax_id"),
    ("Meterline tax rate", "tax_rate"),
    ("Meterline payment terms (days)", "payment_terms_days"),
    ("Meterline tax exempt", "tax_exempt"),
))  # fmt: skip
SHAPES = {shape.name: shape for shape in (SALESFORCE, HUBSPOT)}


class CrmFileError(ValueError):
    """The file is not in the CRM's shape; the message says what is missing."""


def export_csv(customers: Sequence[Customer], shape: Shape) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # as the CRMs' own exports end lines
    writer.writerow(shape.header)
    for customer in customers:
        writer.writerow([_text(getattr(customer, field)) for _, field in shape.columns])
    return out.getvalue()


def import_rows(text: str, shape: Shape, tenant: str) -> list[tuple[int, NewCustomer | str]]:
    """The file's rows as customers of ``tenant`` to import (row numbers from 2, the
    header being 1), or, for a row that is not one, what is wrong with it. Columns the
    shape does not name are left alone (a CRM export holds many)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    present = set(reader.fieldnames or [])
    missing = [column for column, field in shape.columns
               if field in ("customer", "name") and column not in present]  # fmt: skip
    if missing:
        raise CrmFileError(f"not a {shape.name} file: no column {', '.join(missing)} (the "
                           f"columns are {', '.join(shape.header)})")  # fmt: skip
    rows: list[tuple[int, NewCustomer | str]] = []
    for number, row in enumerate(reader, start=2):
        given = {field: (row.get(column) or "").strip() for column, field in shape.columns}
        values: dict[str, object] = {f: v for f, v in given.items() if v != ""}
        if "tax_rate" in values:  # a CRM shows a percentage as "8.25%"
            values["tax_rate"] = given["tax_rate"].removesuffix("%").strip()
        values.update(customer=given["customer"], name=given["name"], tenant=tenant)
        try:
            rows.append((number, msgspec.convert(values, NewCustomer, strict=False)))
        except msgspec.ValidationError as error:
            rows.append((number, str(error)))
    return rows


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as both CRMs write a checkbox
    return "" if value is None else str(value)
