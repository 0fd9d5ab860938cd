"""`meterline serve` stopped and killed as operators and OOM killers do, with the embedded
broker it starts itself (which keeps events in memory):

* SIGTERM mid-stream, or Ctrl-C in its terminal (SIGINT to its whole process group), then
  a restart: the clean stop waits until every acknowledged event is billed, the SDK
  retries through the gap, and every event counts once.
* SIGKILL of serve mid-stream: its broker and worker die with it (nothing is left holding
  the port or the store), the next serve starts at once, and a resend of what was sent
  (what the README tells a producer to do after a crash) bills every event once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation.reconcile import reconcile
from base.events import UsageEvent
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.client import UsageClient
from meterline.cli_support import load_book
from meterline.demo import generator
from meterline.demo.generator import distinct
from meterline.demo.job import prepare_store
from meterline.embedded_broker import free_port
from meterline.worker_process import settings_env
from tests.expected import expected_totals, print_reconciliation
from tests.integration.test_serve import wait_for_health
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SEED = int(os.environ.get("METERLINE_FAULT_SEED", "20261201"))
PLANS = {"sub-1": "starter", "sub-2": "growth", "sub-3": "scale"}


class Serving:
    """One data directory and key; `meterline serve` started and stopped on it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.now = datetime.now(UTC).replace(microsecond=0)
        month = self.now.date().replace(day=1)
        prepare_store(settings, [generator.subscription("acme", sub, f"c-{sub}", plan, month)
                                 for sub, plan in PLANS.items()])  # fmt: skip
        self.key, _ = KeyRing(settings.api_keys_path).create("acme", "faults")
        self.env = settings_env(settings, "")
        del self.env["KAFKA_BOOTSTRAP_SERVERS"]  # serve starts the embedded broker itself
        self.url = f"http://127.0.0.1:{settings.gateway_port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.output = ""

    def start(self) -> None:
        # In a process group of its own, as a shell runs it, so Ctrl-C can be sent as a
        # terminal sends it: to the whole group.
        self.server = subprocess.Popen([sys.executable, "-m", "meterline", "serve"],
                                       env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, process_group=0)  # fmt: skip
        wait_for_health(self.url, self.server)

    def stop(self, how: str = "sigterm") -> str:
        """SIGTERM to serve, or Ctrl-C to its group (``how``), and what serve said."""
        assert self.server is not None
        if how == "ctrl-c":
            os.killpg(self.server.pid, signal.SIGINT)
        else:
            self.server.send_signal(signal.SIGTERM)
        said = self.server.communicate(timeout=180)[0].decode(errors="replace")
        assert self.server.returncode == 0, said
        return said

    def event(self, number: int, rng: random.Random) -> UsageEvent:
        at = max(self.now.replace(day=1), self.now - timedelta(minutes=rng.randint(1, 600)))
        meter, quantity = rng.choice([("api_calls", rng.randint(1, 900)),
                                      ("tokens", rng.randint(1, 5000))])  # fmt: skip
        return UsageEvent(f"e{number}", "acme", rng.choice(list(PLANS)), meter, quantity, at,
                          "faults", {"model": rng.choice(["small", "large"])})  # fmt: skip

    def check(self, sent: list[UsageEvent], label: str) -> None:
        store = Stores.open(self.settings)
        try:
            rows = store.reads.rated_totals(self.now.date().replace(day=1), tenant="acme")
            stored = store.connection.count("events", tenant="acme")
            found = reconcile(store.reads)
        finally:
            store.close()
        billed = {(r.subscription, r.meter, r.period_start, r.plan_version,
                   r.group): (r.quantity, r.amount) for r in rows}  # fmt: skip
        once = distinct(sent)
        print(f"\n{label}: sent {len(sent):,} (resends included), {len(once):,} distinct, "
              f"refused 0, billed {stored:,}")  # fmt: skip
        print_reconciliation(found)
        assert found.holds, found.first_failure()
        assert stored == len(once)
        assert billed == expected_totals(load_book(self.settings), PLANS, once)


def record_all(serving: Serving, events: list[UsageEvent], refused: list[object]) -> None:
    with UsageClient(serving.url, serving.key, source="faults", batch_size=100,
                     on_rejected=lambda *problem: refused.append(problem)) as usage:  # fmt: skip
        for event in events:
            usage.record(event.subscription, event.meter, event.quantity, event_id=event.id,
                         timestamp=event.timestamp, properties=event.properties)  # fmt: skip
            time.sleep(0.001)  # a steady stream, so that the stop lands in the middle of it


@pytest.fixture
def serving(settings_factory: Callable[..., Settings], tmp_path: Path) -> Serving:
    return Serving(settings_factory(tmp_path, gateway_port=free_port(),
                                    api_keys_file=tmp_path / "keys.json"))  # fmt: skip


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_a_clean_stop_mid_stream_then_a_restart_bills_every_event_once(
    serving: Serving, how: str
) -> None:
    rng = random.Random(SEED)
    sent = [serving.event(number, rng) for number in range(3000)]
    refused: list[object] = []
    sender = threading.Thread(target=record_all, args=(serving, sent, refused))
    serving.start()
    sender.start()
    time.sleep(1.0)
    said = serving.stop(how)
    assert "stopped cleanly: every acknowledged event is billed" in said, said
    serving.start()  # the SDK retries what it could not deliver meanwhile
    sender.join(timeout=300)
    assert not sender.is_alive() and refused == []
    serving.stop()
    serving.check(sent, f"seed {SEED}: {how} and restart")


def test_sigkill_of_serve_takes_its_tree_and_a_resend_bills_every_event_once(
    serving: Serving,
) -> None:
    rng = random.Random(SEED + 1)
    first = [serving.event(number, rng) for number in range(2000)]
    refused: list[object] = []
    serving.start()
    assert serving.server is not None
    children = child_pids(serving.server.pid)
    assert len(children) >= 2, "serve runs the broker and a worker"
    sender = threading.Thread(target=record_all, args=(serving, first, refused))
    sender.start()
    time.sleep(1.0)
    serving.server.kill()  # what an OOM kill does
    serving.server.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in children if alive(pid)]
    for pid in left:  # so that a failure here leaves nothing running
        os.kill(pid, signal.SIGKILL)
    assert not left, "serve's children died with it"
    serving.start()
    sender.join(timeout=300)  # the SDK retried until serve was back
    assert not sender.is_alive() and refused == []
    later = [serving.event(number, rng) for number in range(2000, 2500)]
    resent: list[UsageEvent] = first + later
    refused_later: list[object] = []
    record_all(serving, resent, refused_later)
    serving.stop()
    assert refused_later == []
    serving.check(first + resent, f"seed {SEED}: SIGKILL of serve, then a resend")


def child_pids(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    threads = Path(f"/proc/{pid}/task").iterdir()
    for thread in threads:  # children started by the supervisor thread are listed there
        found += (thread / "children").read_text().split()
    return sorted({int(child) for child in found})


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
