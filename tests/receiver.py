"""A webhook receiver the test starts: a real HTTP server on 127.0.0.1 that verifies each
delivery with the Standard Webhooks reference library, as a tenant's receiver would, and
keeps what arrived. It can be told to fail the next requests, to see retries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    id: str
    type: str
    body: dict[str, Any]
    verified: bool


@dataclass
class Receiver:
    url: str
    secret: str = ""  # set once the endpoint is made
    received: list[Received] = field(default_factory=list)
    failing: int = 0  # answer 500 to this many more requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self, kind: str | None = None) -> list[str]:
        with self.lock:
            return [r.id for r in self.received if kind is None or r.type == kind]

    def wait_for(self, count: int, kind: str | None = None, timeout: float = 30.0) -> list[str]:
        """The distinct ids of ``kind`` once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while len(set(self.ids(kind))) < count:
            assert time.monotonic() < deadline, (
                f"{count} {kind or ''} deliveries did not arrive: {self.received}"
            )
            time.sleep(0.05)
        return sorted(set(self.ids(kind)))


@contextmanager
def receiving() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks")
    server.receiver = receiver  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with receiver.lock:
            if receiver.failing > 0:
                receiver.failing -= 1
                status = 500
            else:
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                said = json.loads(body)
                receiver.received.append(
                    Received(headers.get("webhook-id", ""), said.get("type", ""), said, verified)
                )
                status = 204 if verified else 401
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return
