"""The gateway's small parts: API keys kept only as digests, the per-tenant rate limit,
and the OpenAPI copy in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.api_keys import KeyFileError, KeyRing
from ingest.openapi import KEPT_COPY, rendered
from ingest.rate_limit import RateLimiter


def tenant_of(ring: KeyRing, key: str) -> str | None:
    record = ring.record_of(key)
    return None if record is None else record.tenant


def test_keys_are_stored_as_digests_and_bound_to_their_tenant_and_scope(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    acme_key, acme = ring.create("acme", "ci")
    globex_key, _ = ring.create("globex", "prod", scope="admin")
    stored = (tmp_path / "keys.json").read_text()
    assert acme_key not in stored and globex_key not in stored
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    fresh = KeyRing(tmp_path / "keys.json")
    assert tenant_of(fresh, acme_key) == "acme"
    assert tenant_of(fresh, globex_key) == "globex"
    assert tenant_of(fresh, acme_key + "x") is None
    assert tenant_of(fresh, "") is None
    acme_record, globex_record = fresh.record_of(acme_key), fresh.record_of(globex_key)
    assert acme_record is not None and globex_record is not None
    assert acme_record.allows("ingest") and not acme_record.allows("admin")
    assert globex_record.allows("ingest") and globex_record.allows("admin")
    assert [r.tenant for r in ring.revoke(acme.hint)] == ["acme"]
    assert tenant_of(fresh, acme_key) is None, "a revoked key stops working without a restart"
    assert tenant_of(fresh, globex_key) == "globex"
    with pytest.raises(ValueError, match="scope 'root'"):
        ring.create("acme", "x", scope="root")


def test_a_key_file_written_before_scopes_holds_ingest_keys(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    key, _ = ring.create("acme", "old")
    rows = json.loads((tmp_path / "keys.json").read_text())
    for row in rows:
        del row["scope"]
    (tmp_path / "keys.json").write_text(json.dumps(rows))
    record = KeyRing(tmp_path / "keys.json").record_of(key)
    assert record is not None and record.scope == "ingest"


def test_a_broken_key_file_is_reported_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(KeyFileError, match=r"keys\.json"):
        KeyRing(tmp_path / "keys.json").record_of("mlk_x")
    assert KeyRing(tmp_path / "absent.json").record_of("mlk_x") is None


def test_the_rate_limit_allows_a_burst_then_the_rate_and_says_how_long_to_wait() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=100, burst=200, clock=lambda: now[0])
    assert limiter.take("acme", 200) == 0
    assert limiter.take("acme", 50) == pytest.approx(0.5)
    assert limiter.take("globex", 200) == 0, "each tenant has its own bucket"
    now[0] = 0.5
    assert limiter.take("acme", 50) == 0
    assert limiter.take("acme", 1) > 0
    now[0] = 100.0
    assert limiter.take("acme", 10_000) == 0, "a request above the burst passes when full"
    assert limiter.take("acme", 1) == pytest.approx(0.01)


def test_the_kept_openapi_copy_is_current() -> None:
    # Compared as data, not as text: the document's layout is json's, not ours to pin.
    assert json.loads(KEPT_COPY.read_text()) == json.loads(rendered()), (
        "ingest/openapi.json is stale: run `.venv/bin/meterline openapi > ingest/openapi.json`"
    )
    paths = json.loads(rendered())["paths"]
    assert set(paths["/v1/events"]["post"]["responses"]) >= {"202", "401", "403", "413", "429"}
