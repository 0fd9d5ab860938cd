"""The pure parts of webhooks: signatures that the Standard Webhooks reference library
verifies, the retry schedule, a delivery's state from its attempts, and message ids that
are the same whenever a fact is read again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks import signing
from webhooks.delivery import state
from webhooks.messages import INVOICE_FINALIZED, message
from webhooks.schedule import ATTEMPTS, NOW, RETRY_DELAYS, SPAN, next_attempt
from webhooks.store import ATTEMPT, REPLAY, Attempt

T0 = datetime(2026, 8, 1, tzinfo=UTC)


def test_the_reference_library_verifies_a_signature_and_refuses_a_changed_body() -> None:
    secret = signing.new_secret()
    body = b'{"type":"invoice.finalized","data":{"total":"12.50"}}'
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers(secret, "msg_abc", now, body)
    assert Webhook(secret).verify(body, headers) == {"type": "invoice.finalized",
                                                     "data": {"total": "12.50"}}  # fmt: skip
    assert signing.verify(secret, headers, body, now)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"12.50", b"99.50"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    assert not signing.verify(secret, headers, body, now + 3600)  # a capture replayed later


def test_retries_span_about_three_days_then_stop() -> None:
    assert timedelta(days=2, hours=20) < SPAN <= timedelta(days=3)
    assert list(RETRY_DELAYS) == sorted(RETRY_DELAYS)
    failed: list[datetime] = []
    assert next_attempt(failed) == NOW
    at = T0
    for delay in RETRY_DELAYS:
        failed.append(at)
        due = next_attempt(failed)
        assert due == at + delay
        at = due
    failed.append(at)
    assert len(failed) == ATTEMPTS and next_attempt(failed) is None


def attempt(at: datetime, status: int, kind: str = ATTEMPT) -> Attempt:
    return Attempt("t", "msg_1", "ep_1", at, kind, status, "")


def test_a_delivery_state_comes_from_its_attempts_and_a_replay_starts_again() -> None:
    assert state([]) == ("pending", [])
    assert state([attempt(T0, 500)]) == ("pending", [T0])
    assert state([attempt(T0, 500), attempt(T0 + timedelta(seconds=5), 204)])[0] == "delivered"
    spent = [attempt(T0 + timedelta(hours=k), 0) for k in range(ATTEMPTS)]
    assert state(spent)[0] == "failed"
    replayed = [*spent, attempt(T0 + timedelta(days=4), 0, REPLAY)]
    assert state(replayed) == ("pending", [])
    delivered_then_replayed = [attempt(T0, 200), attempt(T0 + timedelta(days=1), 0, REPLAY)]
    assert state(delivered_then_replayed) == ("pending", [])


def test_a_message_is_the_same_whenever_its_fact_is_read_again() -> None:
    one = message("t", INVOICE_FINALIZED, "INV-1", T0, {"total": "1"})
    assert one == message("t", INVOICE_FINALIZED, "INV-1", T0, {"total": "1"})
    assert one.id.startswith("msg_")
    assert one.id != message("t2", INVOICE_FINALIZED, "INV-1", T0, {}).id
    assert one.id != message("t", "invoice.drafted", "INV-1", T0, {}).id
