"""The gateway's small parts: API keys kept only as digests, the per-tenant rate limit,
and the OpenAPI copy in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.api_keys import KeyFileError, KeyRing
from ingest.openapi import KEPT_COPY, rendered
from ingest.rate_limit import RateLimiter


def test_keys_are_stored_as_digests_and_bound_to_their_tenant(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    acme_key, acme = ring.create("acme", "ci")
    globex_key, _ = ring.create("globex", "prod")
    stored = (tmp_path / "keys.json").read_text()
    assert acme_key not in stored and globex_key not in stored
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    fresh = KeyRing(tmp_path / "keys.json")
    assert fresh.tenant_of(acme_key) == "acme"
    assert fresh.tenant_of(globex_key) == "globex"
    assert fresh.tenant_of(acme_key + "x") is None
    assert fresh.tenant_of("") is None
    assert [r.tenant for r in ring.revoke(acme.hint)] == ["acme"]
    assert fresh.tenant_of(acme_key) is None, "a revoked key stops working without a restart"
    assert fresh.tenant_of(globex_key) == "globex"


def test_a_broken_key_file_is_reported_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(KeyFileError, match=r"keys\.json"):
        KeyRing(tmp_path / "keys.json").tenant_of("mlk_x")
    assert KeyRing(tmp_path / "absent.json").tenant_of("mlk_x") is None


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
    assert KEPT_COPY.read_text() == rendered(), (
        "ingest/openapi.json is stale: run `.venv/bin/meterline openapi > ingest/openapi.json`"
    )
    paths = json.loads(rendered())["paths"]
    assert set(paths["/v1/events"]["post"]["responses"]) >= {"202", "401", "403", "413", "429"}
