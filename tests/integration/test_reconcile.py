"""Reconciliation against the real store: batches of records, with duplicates and refusals
in them, written as the worker writes them; the identity holds, and breaks, naming the
subscription, when an event of a record or a whole record goes missing."""

from __future__ import annotations

import pytest

from aggregation.model import BatchResult
from aggregation.reconcile import reconcile
from base.events import encode, encode_batch
from tests.stores import Stores
from tests.unit.test_batch import home, processor, usage

pytestmark = pytest.mark.integration


def written(store: Stores) -> BatchResult:
    """Three records of s1 (a batch of three events with a repeat in it, one event, an
    event of a plan that does not price it) and one of an unknown subscription."""
    step = processor()
    p = home("s1")
    records = [
        (p, 0, encode_batch([usage("a", quantity=5), usage("b", quantity=7), usage("a")])),
        (p, 1, encode(usage("c", quantity=1))),
        (p, 2, encode(usage("d", meter="gpu_hours"))),
        (home("nobody"), 3, encode(usage("e", subscription="nobody"))),
    ]
    result = step.process(records)
    store.sink.write_batch(result)
    return result


def test_every_event_of_every_record_is_billed_a_duplicate_or_dead_lettered(
    store: Stores,
) -> None:
    result = written(store)
    found = reconcile(store.reads)
    assert found.holds, found.first_failure()
    (month,) = found.months
    assert (month.tenant, month.billed, month.duplicates, month.dead_lettered) == (
        "demo",
        len(result.accepted),
        1,
        len(result.rejected),
    )
    assert month.acknowledged == 6 and month.missing == 0


def test_an_event_lost_from_a_record_breaks_the_identity_and_names_its_subscription(
    store: Stores,
) -> None:
    result = written(store)
    lost = result.accepted[1]  # "b", the second event of the first record
    store.connection.client.command(
        f"DELETE FROM {store.connection.table('events')} WHERE event_id = {{id:String}}",
        parameters={"id": lost.event.id},
    )
    found = reconcile(store.reads)
    assert not found.holds
    failure = found.first_failure()
    assert failure is not None and "demo/s1" in failure and "held 3 events" in failure
    assert found.months[0].missing == 1


def test_a_record_lost_whole_breaks_the_identity(store: Stores) -> None:
    written(store)
    store.connection.client.command(
        f"DELETE FROM {store.connection.table('events')} WHERE event_id = 'c'"
    )  # the record at offset 1 held only "c"
    found = reconcile(store.reads)
    assert not found.holds and found.unaccounted_records == 1
