"""Signatures in the Standard Webhooks convention (standardwebhooks.com), which receivers'
libraries verify as they are: HMAC-SHA256 with the endpoint's secret over
``{webhook-id}.{webhook-timestamp}.{body}``, sent base64-encoded as ``v1,<signature>`` in
the ``webhook-signature`` header. A secret is ``whsec_`` and 24 random bytes in base64."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300  # how far a receiver should accept a timestamp from its clock


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: signed anew each time, with that attempt's timestamp."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(secret: str, given: dict[str, str], body: bytes, now: int) -> bool:
    """What a receiver checks: one of the signatures given matches, and the timestamp is
    within ``TOLERANCE_SECONDS`` of its clock (replayed captures are refused)."""
    try:
        message_id = given["webhook-id"]
        timestamp = int(given["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = signature(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, sent)
               for sent in given.get("webhook-signature", "").split())  # fmt: skip
