"""Backfills and retractions of closed periods: propose one (the preview), then commit it.

Only a period no longer open to live events can be corrected: one that ended before the
oldest timestamp the pipeline accepts (``max_event_age_days``). No worker will write its
totals again, so a correction's totals are never raced by the replay rule.

A proposal rates each subscription's touched period again from its billable events, with
the backfilled ones added or the retracted ones left out (``aggregation.recompute``), and
composes what that does to each invoice (``invoicing.corrections``). Committing it stores
the plan in the journal first, then the events and retractions, the rewritten totals,
the credit notes and recomputed drafts, and marks it committed last. A commit cut short
(a crash, a kill) is finished from its journal by ``finish_pending``, which every
correction and invoicing command runs first: the same plan rated again from the same
committed events gives the same totals, a credit note already issued is counted as billed
and not issued again, and closing is idempotent. Run corrections one at a time per tenant,
like finalize.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from msgspec import structs

from aggregation.corrections import (
    BACKFILL,
    COMMITTED,
    PENDING,
    RETRACT,
    Plan,
    Retracted,
    StoredTotal,
    Touched,
)
from aggregation.model import RatedRows
from aggregation.recompute import Refused, rerate, zero_rows
from aggregation.state import dedupe_key
from base.clickhouse import Connection
from base.events import UsageEvent, owner_key, partition_of, utc_day
from base.settings import Settings
from invoicing.charges import Pricing, period_lines
from invoicing.closing import close_period
from invoicing.corrections import Effect, billed, credit_note, effect
from invoicing.invoice import FINALIZED, Invoice, Party, invoice_id
from invoicing.ledger import seller_of
from invoicing.sources import Sources
from invoicing.tax import TaxPolicy, policy_of
from rating.period import Period, midnight
from rating.plans import PriceBook
from rating.table import ChargeTable
from subscriptions.directory import fixed
from subscriptions.model import Customer, Owner, Subscription, Terms


class CorrectionError(ValueError):
    """The correction cannot be made as asked; the message says why."""


@dataclass
class Proposal:
    """A correction worked out and not yet stored: its plan, what it left out and why, the
    totals it rates again, and its effect on each invoice."""

    plan: Plan
    duplicates: list[UsageEvent] = field(default_factory=list)  # stored already
    already: list[str] = field(default_factory=list)  # ids retracted already
    refused: list[Refused] = field(default_factory=list)
    rerated: dict[Touched, tuple[RatedRows, list[StoredTotal]]] = field(default_factory=dict)
    effects: list[Effect] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.plan.touched


@dataclass
class Committed:
    correction: str
    credit_notes: list[str] = field(default_factory=list)
    drafts: list[date] = field(default_factory=list)  # periods closed again


@dataclass
class Corrector:
    """Corrections of one store, by one price book, as of ``clock``."""

    sources: Sources
    book: PriceBook
    max_event_age: timedelta
    seller: Party = field(default_factory=Party)
    partitions: int = 1  # of the events topic: where a backfilled event's subscription lives
    taxes: TaxPolicy | None = None  # what its drafts are taxed by (the built-in rules: None)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    charges: ChargeTable = field(init=False)

    def __post_init__(self) -> None:
        self.charges = ChargeTable.compile(self.book)

    @classmethod
    def of(cls, connection: Connection, book: PriceBook, settings: Settings) -> Corrector:
        """The corrector of the store a command opened, by its settings."""
        return cls(Sources.over(connection), book, timedelta(days=settings.max_event_age_days),
                   seller_of(settings), settings.topic_partitions,
                   taxes=policy_of(settings))  # fmt: skip

    # ----- proposing -----------------------------------------------------------------

    def backfill(self, tenant: str, events: Sequence[UsageEvent], *, by: str, reason: str) -> (
        Proposal
    ):  # fmt: skip
        """Events missed in closed periods, to be added once each."""
        _needs(reason)
        subs = self._subscriptions(tenant)
        terms_of = _terms(subs)
        oldest = self._oldest()
        refused: list[Refused] = []
        candidates: list[tuple[UsageEvent, Period]] = []
        for event in events:
            sub = subs.get(event.subscription)
            if event.tenant != tenant:
                refused.append(Refused(event, "other_tenant",
                                       f"the event names tenant {event.tenant!r}; this "
                                       f"backfill is {tenant!r}'s"))  # fmt: skip
            elif sub is None:
                refused.append(Refused(event, "unknown_subscription",
                                       f"no subscription {event.subscription!r} for tenant "
                                       f"{tenant!r}"))  # fmt: skip
            else:
                period = Period.of(utc_day(event.timestamp), sub.anchor_day)
                if midnight(period.end) > oldest:
                    refused.append(Refused(event, "open_period", _open(event, period, self)))
                else:
                    candidates.append((event, period))
        marks = [dedupe_key(event) for event, _ in candidates]
        known = self.sources.corrections.known_marks(tenant, marks)
        retracted = self.sources.corrections.retracted_marks(tenant, marks)
        proposal = Proposal(_plan(tenant, BACKFILL, by, reason))
        added: list[UsageEvent] = []
        seen: set[bytes] = set()
        for (event, _), mark in zip(candidates, marks, strict=True):
            if mark in retracted:
                refused.append(Refused(event, "retracted", "a correction retracted this event; "
                                       "it is not billed again"))  # fmt: skip
            elif mark in known or mark in seen:
                proposal.duplicates.append(event)
            else:
                seen.add(mark)
                added.append(event)
        proposal.refused = refused
        touched = _touched(added, subs)
        plan = self._planned(proposal.plan, added=tuple(added), touched=touched)
        return self._work_out(plan, proposal, terms_of)

    def retract(
        self,
        tenant: str,
        *,
        by: str,
        reason: str,
        ids: Sequence[str] = (),
        subscription: str | None = None,
        meter: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Proposal:
        """Billable events of closed periods, by id or by subscription, meter and time
        range, to be taken back (they stay in the audit trail, marked)."""
        _needs(reason)
        if not ids and subscription is None:
            raise CorrectionError("name the events to retract: by id, or by subscription "
                                  "(with a meter and a time range if need be)")  # fmt: skip
        found = self.sources.corrections.find(tenant, ids=ids, subscription=subscription,
                                              meter=meter, since=since, until=until)  # fmt: skip
        base = _plan(tenant, RETRACT, by, reason)
        already = self.sources.corrections.retracted_ids(tenant, ids) if ids else set()
        missing = sorted(set(ids) - {event.id for event, _ in found} - already)
        if missing:
            raise CorrectionError(
                f"{len(missing):,} of the ids name no event of {tenant!r} that was billed: "
                f"{', '.join(missing[:10])}"
            )
        if not found:  # asked again, or a range with nothing billable left in it
            return Proposal(base, already=sorted(already))
        subs = self._subscriptions(tenant)
        oldest = self._oldest()
        for event, _ in found:
            sub = subs.get(event.subscription)
            period = Period.of(utc_day(event.timestamp), sub.anchor_day if sub else 1)
            if midnight(period.end) > oldest:
                raise CorrectionError(_open(event, period, self))
        retracted = tuple(
            Retracted(event.subscription, event.meter, mark.hex(), event.id, event.quantity,
                      event.timestamp)
            for event, mark in found
        )  # fmt: skip
        plan = self._planned(base, retracted=retracted,
                             touched=_touched([event for event, _ in found], subs))  # fmt: skip
        return self._work_out(plan, Proposal(plan), _terms(subs))

    def _planned(self, base: Plan, **given: object) -> Plan:
        """``base`` with what it adds or retracts, named by a digest of that: the same
        correction asked again has the same id, so one cut short is found and finished."""
        plan = structs.replace(base, **given)
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{plan.tenant}/{plan.kind}".encode())
        for mark in sorted([dedupe_key(e).hex() for e in plan.added]
                           + [r.mark for r in plan.retracted]):  # fmt: skip
            digest.update(mark.encode())
        homes = {t.subscription: partition_of(owner_key(plan.tenant, t.subscription),
                                              self.partitions) for t in plan.touched}  # fmt: skip
        return structs.replace(plan, correction=f"COR-{digest.hexdigest().upper()}", homes=homes)

    def _work_out(
        self,
        plan: Plan,
        proposal: Proposal,
        terms_of: Callable[[Sequence[Owner]], list[Terms | None]],
    ) -> Proposal:
        """Rate the touched periods again and compose the invoices' changes."""
        proposal.plan = plan
        retracted = {r.mark for r in plan.retracted}
        for touched in plan.touched:
            events = [
                event for event, mark, _ in self.sources.corrections.billable(
                    plan.tenant, touched.subscription, touched.meters, touched.since,
                    touched.until)
                if mark.hex() not in retracted
            ]  # fmt: skip
            added = [e for e in plan.added if _in(e, touched)]
            rerated = rerate([*events, *added], terms_of, self.book, self.charges)
            marks = {dedupe_key(e) for e in added}
            stale = [r for r in rerated.refused if dedupe_key(r.event) not in marks]
            if stale:
                first = stale[0]
                raise CorrectionError(
                    f"{len(stale):,} stored events of {plan.tenant}/{touched.subscription} "
                    f"({touched.period:%Y-%m}) would no longer be billed: {first.event.id}: "
                    f"{first.detail}; the subscription's terms changed since"
                )
            proposal.refused += rerated.refused
            stored = self.sources.corrections.stored_totals(plan.tenant, touched)
            keys = set(rerated.rows.keys)
            gone = zero_rows([s.key for s in stored if s.key not in keys], self.book, self.charges)
            proposal.rerated[touched] = (RatedRows.of([*rerated.rows, *gone]), stored)
        if proposal.refused and plan.added:  # what the batch step refused is not added
            dropped = {dedupe_key(r.event) for r in proposal.refused}
            plan = structs.replace(plan, added=tuple(e for e in plan.added
                                                     if dedupe_key(e) not in dropped))  # fmt: skip
            proposal.plan = plan
        subs = self._subscriptions(plan.tenant)
        customers = self.sources.subscriptions.customers(plan.tenant)
        proposal.effects = [self._effect(subs[t.subscription], t, rows, customers)
                            for t, (rows, _) in proposal.rerated.items()]  # fmt: skip
        return proposal

    def _effect(
        self,
        sub: Subscription,
        touched: Touched,
        rows: RatedRows,
        customers: dict[tuple[str, str], Customer],
    ) -> Effect:
        sources, tenant = self.sources, sub.tenant
        old = sources.pipeline.rated_totals(touched.period, tenant, touched.subscription)
        new = [r for r in old if r.meter not in touched.meters] + list(rows)
        pricing = Pricing.of(self.book)
        pricing.prepare([*old, *new])
        now = period_lines(touched.period, sub, new, pricing)
        identifier = invoice_id(tenant, touched.subscription, touched.period)
        invoice = sources.ledger.find(identifier)
        customer = customers.get((tenant, sub.customer))
        template = Effect(tenant, touched.subscription, touched.period, identifier,
                          invoice.status if invoice else "",
                          invoice.currency if invoice else self.book.plan(sub.plan).currency,
                          invoice.tax_rate if invoice else
                          (customer.tax_rate if customer else Decimal(0)), ())  # fmt: skip
        if invoice is None or invoice.status != FINALIZED:
            return effect(
                now,
                period_lines(touched.period, sub, old, pricing),
                period=touched.period,
                invoice=None,
                notes=(),
                template=template,
            )
        notes = sources.credits.notes(tenant, invoice_id=identifier)
        later = self._later_finalized(sub, touched.period)
        found = effect(now, billed(invoice, later, notes), period=touched.period,
                       invoice=invoice, notes=notes, template=template)  # fmt: skip
        note = credit_note(found, invoice, notes, number=0, reason="preview", correction="",
                           today=self.clock().date())  # fmt: skip
        if note is not None:
            found = replace(found, credit_tax=note.tax)
        # The next open invoice bills the adjustments, and is closed again even without
        # any: an adjustment it holds from before may have to go.
        return replace(found, adjust_on=self._next_open(sub, touched.period))

    def _later_finalized(self, sub: Subscription, period: date) -> list[Invoice]:
        labels = _labels_after(period, self.clock().date())
        return self.sources.ledger.invoices(labels, sub.tenant, sub.subscription,
                                            status=FINALIZED)  # fmt: skip

    def _next_open(self, sub: Subscription, period: date) -> date:
        """The first period after ``period`` whose invoice is not finalized: it bills the
        adjustments."""
        finalized = {i.period for i in self._later_finalized(sub, period)}
        for label in _labels_after(period, self.clock().date()):
            if label not in finalized:
                return label
        return Period.of(self.clock().date()).shifted(1).start

    # ----- committing ----------------------------------------------------------------

    def commit(self, proposal: Proposal, began: datetime | None = None) -> Committed:
        """Store the correction and bill it; see the module's docstring for the order.
        ``began``: when a commit cut short began, which its rows keep."""
        plan = proposal.plan
        done = Committed(plan.correction)
        store = self.sources.corrections
        if proposal.empty or store.status_of(plan.tenant, plan.correction) == COMMITTED:
            return done
        now = began or self.clock()
        store.record(plan, PENDING, now)
        store.store_changes(plan, now)
        for rows, stored in proposal.rerated.values():
            store.rewrite_totals(rows, stored, plan.homes)
        self._bill(proposal, done)
        store.record(plan, COMMITTED, now)
        return done

    def _bill(self, proposal: Proposal, done: Committed) -> None:
        plan = proposal.plan
        credits, ledger = self.sources.credits, self.sources.ledger
        reclose: dict[date, set[Owner]] = defaultdict(set)
        for found in proposal.effects:
            owner = (found.tenant, found.subscription)
            if found.status != FINALIZED:
                reclose[found.period].add(owner)
                continue
            if found.adjust_on is not None:
                reclose[found.adjust_on].add(owner)
            invoice = ledger.find(found.invoice_id)
            assert invoice is not None
            notes = credits.notes(plan.tenant, invoice_id=found.invoice_id)
            if any(note.correction == plan.correction for note in notes):
                continue  # issued by a commit cut short after it
            note = credit_note(found, invoice, notes, number=credits.last_number(plan.tenant) + 1,
                               reason=f"{plan.reason} ({plan.correction})",
                               correction=plan.correction, today=self.clock().date())  # fmt: skip
            if note is not None:
                credits.write(note)
                done.credit_notes.append(note.credit_note_id)
        for period, owners in sorted(reclose.items()):
            if midnight(period) > self.clock():
                continue  # a period not begun is drafted by its own close
            close_period(self.sources, self.book, period, tenant=plan.tenant, only=owners,
                         clock=self.clock, seller=self.seller, taxes=self.taxes)  # fmt: skip
            done.drafts.append(period)

    def finish_pending(self, tenant: str | None = None) -> list[str]:
        """Finish every correction a crash left pending (of ``tenant``), oldest first."""
        finished = []
        for entry in self.sources.corrections.journal(tenant, PENDING):
            plan = entry.plan
            subs = self._subscriptions(plan.tenant)
            proposal = self._work_out(plan, Proposal(plan), _terms(subs))
            self.commit(proposal, entry.created_at)
            finished.append(plan.correction)
        return finished

    # ----- helpers -------------------------------------------------------------------

    def _oldest(self) -> datetime:
        return self.clock() - self.max_event_age

    def _subscriptions(self, tenant: str) -> dict[str, Subscription]:
        return {s.subscription: s for s in self.sources.subscriptions.subscriptions(tenant)}


def _needs(reason: str) -> None:
    if not reason.strip():
        raise CorrectionError("a correction says why: give a reason")


def _plan(tenant: str, kind: str, by: str, reason: str) -> Plan:
    return Plan("", tenant, kind, by.strip() or "unknown", reason.strip())


def _terms(subs: dict[str, Subscription]) -> Callable[[Sequence[Owner]], list[Terms | None]]:
    return fixed({sub.owner: sub.terms() for sub in subs.values()})


def _open(event: UsageEvent, period: Period, corrector: Corrector) -> str:
    days = corrector.max_event_age.days
    return (
        f"{event.id} is stamped {event.timestamp.isoformat()}, in the period "
        f"{period.label:%Y-%m} of {event.subscription}, which still takes live events (up to "
        f"{days} days old): send it to POST /v1/events; a correction reaches only periods "
        f"that ended more than {days} days ago"
    )


def _touched(events: Sequence[UsageEvent], subs: dict[str, Subscription]) -> tuple[Touched, ...]:
    meters: dict[tuple[str, date], set[str]] = defaultdict(set)
    for event in events:
        sub = subs[event.subscription]
        label = Period.of(utc_day(event.timestamp), sub.anchor_day).label
        meters[(event.subscription, label)].add(event.meter)
    found = []
    for (subscription, label), names in sorted(meters.items()):
        period = subs[subscription].period(label)
        found.append(Touched(subscription, label, midnight(period.start), midnight(period.end),
                             tuple(sorted(names))))  # fmt: skip
    return tuple(found)


def _in(event: UsageEvent, touched: Touched) -> bool:
    return (event.subscription == touched.subscription and event.meter in touched.meters
            and touched.since <= event.timestamp < touched.until)  # fmt: skip


def _labels_after(period: date, today: date) -> list[date]:
    """The labels of the months after ``period`` up to the one of ``today``."""
    labels = []
    label = Period(period).shifted(1).start
    while label <= today:
        labels.append(label)
        label = Period(label).shifted(1).start
    return labels
