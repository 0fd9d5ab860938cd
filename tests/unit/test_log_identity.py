"""A new log is told from a replay: the rule in aggregation/log_identity.py, and how the
replay rule of aggregation/state.py treats positions of a newer log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregation.log_identity import (
    Checkpoint,
    Judgement,
    Probe,
    fingerprint,
    judge,
    ordinal,
    split,
)
from aggregation.model import TotalKey
from aggregation.state import UsageState, Verdict, dedupe_key
from base.events import UsageEvent

HELD = fingerprint(b"acme/sub-1", b"[...]", 1_764_000_000_000)
CHECKPOINT = Checkpoint(partition=2, epoch=0, offset=100, fingerprint=HELD)

CASES = [
    ("the same record at the checkpoint's offset is the same log",
     Probe(100, HELD, 250), Judgement.SAME_LOG),
    ("another record at the checkpoint's offset is a new log",
     Probe(100, fingerprint(b"acme/sub-1", b"[...]", 1), 250), Judgement.NEW_LOG),
    ("a log that ends before the checkpoint's offset is a new log (offsets went back)",
     Probe(None, None, 40), Judgement.NEW_LOG),
    ("a log that ends right at the checkpoint's offset is a new log",
     Probe(None, None, 100), Judgement.NEW_LOG),
    ("a log that starts after the checkpoint's offset lost it to retention: the same log",
     Probe(180, fingerprint(b"k", b"v", 2), 250), Judgement.SAME_LOG),
    ("no record and no end from the broker decides nothing",
     Probe(None, None, None), Judgement.UNKNOWN),
    ("no record but an end beyond the checkpoint decides nothing",
     Probe(None, None, 250), Judgement.UNKNOWN),
]  # fmt: skip


@pytest.mark.parametrize(("case", "probe", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_log_is_judged_by_what_it_holds_at_the_checkpoint(
    case: str, probe: Probe, expected: Judgement
) -> None:
    judgement, reason = judge(CHECKPOINT, probe)
    assert judgement is expected, case
    assert reason


def test_a_fingerprint_changes_with_the_key_the_value_and_the_time() -> None:
    prints = {fingerprint(b"k", b"v", 1), fingerprint(b"kv", b"", 1),
              fingerprint(b"k", b"v", 2), fingerprint(None, b"kv", 1)}  # fmt: skip
    assert len(prints) == 4


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1))  # fmt: skip
def test_ordinals_order_by_epoch_first_then_offset_and_split_back(
    epoch: int, offset: int, other_epoch: int, other_offset: int
) -> None:
    assert split(ordinal(epoch, offset)) == (epoch, offset)
    assert (ordinal(epoch, offset) < ordinal(other_epoch, other_offset)) == (
        (epoch, offset) < (other_epoch, other_offset)
    )


def usage(event_id: str, quantity: int) -> UsageEvent:
    return UsageEvent(event_id, "t", "s1", "calls", quantity, datetime(2026, 11, 5, tzinfo=UTC),
                      "svc")  # fmt: skip


KEY = TotalKey("t", "s1", "calls", datetime(2026, 11, 1).date(), "pro", 1, "")


def test_an_event_of_a_new_log_at_an_offset_already_counted_in_the_old_one_is_billed() -> None:
    state = UsageState()
    old, new = usage("a", 5), usage("b", 7)
    assert state.apply((0, ordinal(0, 40), 0), dedupe_key(old), KEY, 5) is Verdict.APPLIED
    # Offset 3 of the new log is far behind offset 40 of the old one: still new usage.
    assert state.apply((0, ordinal(1, 3), 0), dedupe_key(new), KEY, 7) is Verdict.APPLIED
    assert state.totals[KEY].quantity == 12
    # Its replay is absorbed, and the old log's event re-sent into the new one counts once.
    assert state.apply((0, ordinal(1, 3), 0), dedupe_key(new), KEY, 7) is Verdict.REPLAYED
    assert state.apply((0, ordinal(1, 4), 0), dedupe_key(old), KEY, 5) is Verdict.DUPLICATE
    assert state.totals[KEY].quantity == 12
