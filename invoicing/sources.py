"""What invoicing works from, each through the store of the stage that owns it: the
subscriptions and customers it bills, the rated totals and events the pipeline wrote,
the corrections made to closed periods, and its own ledgers of invoices, credit notes and
prepaid credit grants."""

from __future__ import annotations

from dataclasses import dataclass

from aggregation.corrections import CorrectionStore
from aggregation.readers import PipelineReads
from base.clickhouse import Connection
from invoicing.credit_ledger import CreditLedger
from invoicing.grant_ledger import GrantLedger
from invoicing.ledger import InvoiceLedger
from subscriptions.store import SubscriptionStore


@dataclass(frozen=True)
class Sources:
    subscriptions: SubscriptionStore
    pipeline: PipelineReads
    ledger: InvoiceLedger
    credits: CreditLedger
    corrections: CorrectionStore
    grants: GrantLedger

    @classmethod
    def over(cls, connection: Connection) -> Sources:
        subscriptions = SubscriptionStore(connection)
        return cls(subscriptions, PipelineReads(connection),
                   InvoiceLedger(connection, subscriptions), CreditLedger(connection),
                   CorrectionStore(connection), GrantLedger(connection))  # fmt: skip
