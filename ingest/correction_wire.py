"""The bodies of ``POST /v1/corrections/backfill`` and ``/v1/corrections/retract``, read
into the request the store's holder answers (``aggregation.corrections``). A backfill's
events are checked as ``POST /v1/events`` checks them, except for their age: a closed
period is old by definition, and the correction checks that it is closed."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from aggregation.corrections import BACKFILL, RETRACT, CorrectionRequest
from base.events import EventWindow
from ingest.admission import Admission
from ingest.wire import BodyError, Item, PlainEvent, Refusal


class _Backfill(msgspec.Struct, forbid_unknown_fields=True):
    reason: str
    events: list[msgspec.Raw]  # each read on its own, so one bad event is named, not fatal
    by: str = ""
    commit: bool = False


class BackfillBody(msgspec.Struct):
    """Events missed in closed periods, as POST /v1/events takes them, to add once each;
    previewed unless ``commit``."""

    reason: str
    events: list[PlainEvent]
    by: str = ""
    commit: bool = False


class RetractBody(msgspec.Struct, forbid_unknown_fields=True):
    """Billed events of closed periods to take back, by id, or by subscription, meter and
    time range [since, until); previewed unless ``commit``."""

    reason: str
    by: str = ""
    commit: bool = False
    ids: list[str] = msgspec.field(default_factory=list)
    subscription: str | None = None
    meter: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_backfill = msgspec.json.Decoder(_Backfill)
_retract = msgspec.json.Decoder(RetractBody)
KINDS = (BACKFILL, RETRACT)


def any_age(window: EventWindow) -> EventWindow:
    """``window`` without its age limit (the clock skew still holds)."""
    return EventWindow(max_age=timedelta(days=365_000), max_skew=window.max_skew)


def correction_request(
    tenant: str, kind: str, body: bytes, admission: Admission, asker: str
) -> tuple[CorrectionRequest, list[Refusal]]:
    """The request, and the backfilled events that could not be read (named, with why).
    ``asker``: who asks when the body does not say (the API key's name)."""
    try:
        if kind == BACKFILL:
            backfill = _backfill.decode(body)
            items = [Item(index, bytes(raw)) for index, raw in enumerate(backfill.events)]
            admitted = admission.plain_events(tenant, items)
            asked = CorrectionRequest(tenant, BACKFILL, backfill.reason, backfill.by or asker,
                                      backfill.commit, tuple(admitted.events))  # fmt: skip
            return asked, admitted.refused
        retract = _retract.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise BodyError(f"the body is not a {kind} request: {error}") from None
    return CorrectionRequest(tenant, RETRACT, retract.reason, retract.by or asker, retract.commit,
                             ids=tuple(retract.ids), subscription=retract.subscription,
                             meter=retract.meter, since=retract.since,
                             until=retract.until), []  # fmt: skip
