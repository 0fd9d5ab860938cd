"""API keys: each bound to one tenant and a scope, stored only as a SHA-256 digest.

A key's scope is ``ingest`` (send events, read usage: what a product service needs) or
``admin`` (that, and manage the tenant's subscriptions): a service that leaks its key
cannot cancel anyone's subscription.

A key is 32 random bytes, so a fast hash is enough (there is nothing to guess from it, and
a slow password hash would cost every request). The key itself is shown once, when it is
created. The file is read again when it changes, so a new or revoked key takes effect
without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "mlk_"
INGEST, ADMIN = "ingest", "admin"
SCOPES = (INGEST, ADMIN)


class KeyFileError(ValueError):
    """The key file cannot be read; the message names it and says why."""


@dataclass(frozen=True)
class KeyRecord:
    digest: str
    tenant: str
    name: str
    created_at: str
    hint: str  # the key's first characters, to tell keys apart in a listing
    scope: str = INGEST  # key files written before scopes existed hold ingest keys

    def allows(self, scope: str) -> bool:
        return self.scope in (ADMIN, scope)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, KeyRecord] = {}

    def records(self) -> list[KeyRecord]:
        self._refresh()
        return sorted(self._by_digest.values(), key=lambda record: record.created_at)

    def record_of(self, key: str) -> KeyRecord | None:
        self._refresh()
        # Looking up the digest, not the key, leaks nothing about the key through timing.
        return self._by_digest.get(digest(key))

    def create(self, tenant: str, name: str, scope: str = INGEST) -> tuple[str, KeyRecord]:
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        key = PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        record = KeyRecord(digest(key), tenant, name, created, key[:10], scope)
        self._write([*self.records(), record])
        return key, record

    def revoke(self, hint: str) -> list[KeyRecord]:
        """Remove the keys whose hint or name is ``hint``; return them."""
        records = self.records()
        gone = [r for r in records if hint in (r.hint, r.name)]
        if gone:
            self._write([r for r in records if r not in gone])
        return gone

    def _refresh(self) -> None:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._by_digest = None, {}
            return
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return
        try:
            rows = json.loads(self.path.read_text())
            records = [KeyRecord(**row) for row in rows]
        except (OSError, ValueError, TypeError) as error:
            raise KeyFileError(f"cannot read API keys from {self.path}: {error}") from None
        self._stamp, self._by_digest = stamp, {r.digest: r for r in records}

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
        partial.chmod(0o600)
        os.replace(partial, self.path)
        self._stamp = None
