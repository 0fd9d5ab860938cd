"""A gateway on the session's broker, with its own topic and a key file holding one key
for tenant "acme"; served by a real uvicorn server when a test talks HTTP to it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from base.events import UsageEvent, decode_record
from base.kafka_admin import ensure_topic
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.gateway import Gateway
from meterline.cli_support import load_book
from meterline.embedded_broker import EmbeddedBroker, free_port
from tests.integration.kafka_helpers import read_records


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


@dataclass
class Served:
    settings: Settings
    url: str
    key: str

    def topic_events(self, expected: int) -> list[UsageEvent]:
        records = asyncio.run(
            read_records(self.settings.kafka_bootstrap_servers or "", self.settings.events_topic,
                         self.settings.topic_partitions, expected, timeout=20,
                         weight=lambda value: len(decode_record(value)))
        )  # fmt: skip
        return [e for r in records for e in decode_record(r.value) if isinstance(e, UsageEvent)]


def serve(
    broker: EmbeddedBroker, make: Callable[..., Settings], tmp_path: Path, **overrides: object
) -> Iterator[Served]:
    """A real uvicorn server on a free port, on a thread of its own."""
    gateway, key = gateway_for(broker, make, tmp_path, **overrides)
    with running(gateway) as url:
        yield Served(gateway.settings, url, key)


@contextmanager
def running(gateway: Gateway, port: int | None = None) -> Iterator[str]:
    """``gateway`` served by uvicorn on 127.0.0.1 (``port``, or a free one; its own
    lifespan), on a thread of its own, until the block ends; its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(gateway.asgi(own_lifespan=True), host="127.0.0.1", port=port,
                       log_level="warning")
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
