"""A gateway on the session's broker, with its own topic and a key file holding one key
for tenant "acme"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from base.kafka_admin import ensure_topic
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.gateway import Gateway
from meterline.cli_support import load_book
from meterline.embedded_broker import EmbeddedBroker


def gateway_for(
    broker: EmbeddedBroker, make: Callable[..., Settings], tmp_path: Path, **overrides: object
) -> tuple[Gateway, str]:
    """The gateway (not started) and the API key for tenant "acme"."""
    settings = make(tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers,
                    api_keys_file=tmp_path / "keys.json", **overrides)  # fmt: skip
    keys = KeyRing(settings.api_keys_path)
    key, _ = keys.create("acme", "test")
    asyncio.run(ensure_topic(broker.bootstrap_servers, settings.events_topic, 4))
    return Gateway(settings, load_book(settings), broker.bootstrap_servers, keys), key
