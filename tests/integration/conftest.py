"""Fixtures of the integration tests that talk HTTP to a gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from base.settings import Settings
from meterline.embedded_broker import EmbeddedBroker
from tests.integration.gateway_helpers import Served, serve


@pytest.fixture
def served(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> Iterator[Served]:
    """A gateway served by uvicorn on the session's broker, with a key for tenant acme."""
    yield from serve(broker, settings_factory, tmp_path)
