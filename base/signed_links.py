"""Signed, expiring tokens: what a customer's portal link carries instead of a key.

A token names a tenant, a customer and the moment it expires, and carries an HMAC-SHA256
of those under a secret only meterline holds: changing any part of it, or signing with
another secret, gives a token that is refused; so is one past its moment. Pure: the
secret and the clock are given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime


class LinkError(ValueError):
    """The token is refused; the message says why, for the person holding it."""


@dataclass(frozen=True)
class Grant:
    tenant: str
    customer: str
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def sign(grant: Grant, secret: str) -> str:
    """The token of ``grant``: URL-safe, without "/"."""
    payload = "\n".join([grant.tenant, grant.customer,
                         str(int(grant.expires_at.timestamp()))]).encode()  # fmt: skip
    return f"{_b64(payload)}.{_b64(_signature(secret, payload))}"


def verify(token: str, secret: str, now: datetime) -> Grant:
    """The grant ``token`` carries, if it was signed with ``secret`` and has not expired."""
    encoded, _, signed = token.partition(".")
    try:
        payload, signature = _unb64(encoded), _unb64(signed)
        tenant, customer, expires = payload.decode().split("\n")
        moment = datetime.fromtimestamp(int(expires), UTC)
    except (ValueError, UnicodeDecodeError):
        raise LinkError("this link is not a portal link: ask for a new one") from None
    if not secret or not hmac.compare_digest(signature, _signature(secret, payload)):
        raise LinkError("this link was altered or is not meterline's: ask for a new one")
    if now >= moment:
        raise LinkError(f"this link expired on {moment:%Y-%m-%d %H:%M} UTC: ask for a new one")
    return Grant(tenant, customer, moment)
