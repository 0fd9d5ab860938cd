"""Entitlements answered from the worker's live usage, through `meterline serve`, at a
million subscriptions (on the embedded broker and chDB, everything on this machine).

    python -m loadtests.bench_entitlements [--subscriptions N] [--requests N]
                                           [--staleness-samples N]

Set-up: N subscriptions stored, one event each produced straight into the topic, and the
worker's totals made durable (so it holds N subscriptions' live usage).

(a) baseline: GET /openapi.json through the same gateway and client: the HTTP path alone
    (the gateway answers it from memory), p50 and p99.
(b) GET /v1/entitlements/{subscription}/api for random subscriptions, one request at a
    time over a kept-alive connection: gateway, then the worker's internal page, then
    the answer from live usage; p50 and p99, and the CPU of serve's whole process tree
    per request (the stable figure on a shared machine), less what the tree spends idle
    over as long (the broker's fetches, timers, the webhook runs). Target: p99 under 5 ms.
    (a) and (b) ask with aiohttp's client, as a product's service in Python would: with
    httpx's, the client's own CPU (0.5 ms more a request, on the same two cores) shows in
    the figures, and ``--client httpx`` measures that.
(c) the answer alone, in this process, over a live usage of N subscriptions: what the
    worker spends per request beyond its HTTP page.
(d) staleness: an event sent with POST /v1/events, then the entitlement asked every 2 ms
    until its usage shows the event; from the send to the answer, p50 and p99. Target:
    under 1 s.
(e) a hard limit: an event that reaches one, then the time until the entitlement answers
    deny, and until the gateway refuses the meter's next event (refuse_over_hard_limit).
    Target: under 1 s.

The last line is one JSON object with the figures and the ratio b/a.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from aggregation.entitlements import Balances
from aggregation.live import LiveUsage
from aggregation.model import RatedRows, TotalKey
from base.events import UsageEvent
from base.processes import cpu_seconds
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.producer import produce
from meterline.demo import PRICE_BOOK, generator
from meterline.demo.job import prepare_store, wait_until_consumed
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import settings_env
from rating.loading import load_price_book
from subscriptions.model import Terms

PLAN = "starter"  # its "api" feature: api_calls, hard-limited at 100,000 a period
LIMIT = 100_000


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99, in seconds."""
    if len(samples) < 2:
        return (samples[0], samples[0]) if samples else (0.0, 0.0)
    cut = statistics.quantiles(samples, n=100)
    return cut[49], cut[98]


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    found = []
    for n in range(calls):
        began = time.perf_counter()
        call(n)
        found.append(time.perf_counter() - began)
    return found


def answer_alone(count: int, requests: int, seed: int) -> tuple[float, float]:
    """(c): the worker's answer, over a live usage of ``count`` subscriptions."""
    book = load_price_book(PRICE_BOOK)
    period = datetime.now(UTC).date().replace(day=1)
    rows = RatedRows()
    for n in range(count):
        rows.keys.append(TotalKey("demo", f"sub-{n:06d}", "api_calls", period, PLAN, 1, ""))
        rows.currencies.append("USD")
        rows.quantities.append(n % 1000)
        rows.amounts_nanos.append(n)
        rows.partitions.append(n % 4)
    terms = Terms(PLAN, None, 1)
    live = LiveUsage()
    live.absorb(rows)
    balances = Balances(book, lambda owners: [terms] * len(owners), live)
    rng = random.Random(seed)
    owners = [("demo", f"sub-{rng.randrange(count):06d}") for _ in range(requests)]
    return quantiles(timed(requests, lambda n: balances.answer(owners[n], "api")))


def run(args: argparse.Namespace) -> dict[str, Any]:
    began_at = time.monotonic()
    month = datetime.now(UTC).date().replace(day=1)
    subs = [generator.subscription("demo", f"sub-{n:06d}", f"cust-{n:06d}", PLAN, month)
            for n in range(args.subscriptions)]  # fmt: skip
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="meterline-bench-") as folder:
        data_dir = Path(folder)
        with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
            bootstrap = broker.bootstrap_servers
            run_id = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka_bootstrap_servers=bootstrap, data_dir=data_dir,
                clickhouse_database="meterline_bench", events_topic=f"bench.events.{run_id}",
                consumer_group=f"bench-{run_id}", gateway_port=free_port(),
                worker_web_port=free_port(), refuse_over_hard_limit=True, kafka_idempotence=False,
                tenant_events_per_second=1e9, tenant_burst_events=10**9,
            )  # fmt: skip
            print(f"storing {args.subscriptions:,} subscriptions…", flush=True)
            prepare_store(settings, subs)
            key, _ = KeyRing(settings.api_keys_path).create("demo", "bench")
            log = (data_dir / "serve.log").open("wb")
            server = subprocess.Popen(
                [sys.executable, "-m", "meterline", "serve"],
                env=settings_env(settings, bootstrap), stdout=log, stderr=subprocess.STDOUT,
                process_group=0,
            )  # fmt: skip
            url = f"http://127.0.0.1:{settings.gateway_port}"
            headers = {"authorization": f"Bearer {key}"}
            try:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                    _wait_healthy(http, server, data_dir / "serve.log")
                    print(f"one event for each subscription ({time.monotonic() - began_at:.0f} s"
                          ")…", flush=True)  # fmt: skip
                    stamp = datetime.now(UTC) - timedelta(minutes=1)
                    events = [UsageEvent(f"load-{n}", "demo", sub.subscription, "api_calls", 1,
                                         stamp, "bench") for n, sub in enumerate(subs)]  # fmt: skip
                    offsets = asyncio.run(produce(bootstrap, settings.events_topic, events))
                    asyncio.run(wait_until_consumed(settings, bootstrap, offsets,
                                                    server.poll, lambda _: None))  # fmt: skip

                    def feature(sub: str) -> dict[str, Any]:
                        answer = http.get(f"/v1/entitlements/{sub}/api")
                        answer.raise_for_status()
                        found: dict[str, Any] = answer.json()["features"][0]
                        return found

                    picks = [f"sub-{rng.randrange(args.subscriptions):06d}"
                             for _ in range(args.requests)]  # fmt: skip
                    print(f"(a) baseline, (b) {args.requests:,} entitlement requests…",
                          flush=True)  # fmt: skip
                    asked = ask_aiohttp if args.client == "aiohttp" else ask_httpx
                    baseline, entitled, cpu_per_request = asked(url, headers, picks, server.pid)
                    print("(d) staleness…", flush=True)
                    stale = staleness(http, feature, args, rng)
                    print("(e) a hard limit…", flush=True)
                    deny, refuse = hard_limit(http, feature)
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
    print("(c) the answer alone…", flush=True)
    alone = answer_alone(args.subscriptions, args.requests, args.seed)
    return {
        "subscriptions": args.subscriptions,
        "requests": args.requests,
        "client": args.client,
        "baseline_p50_ms": round(baseline[0] * 1e3, 3),
        "baseline_p99_ms": round(baseline[1] * 1e3, 3),
        "entitlement_p50_ms": round(entitled[0] * 1e3, 3),
        "entitlement_p99_ms": round(entitled[1] * 1e3, 3),
        "entitlement_vs_baseline_p99": round(entitled[1] / baseline[1], 2),
        "serve_cpu_us_per_request": round(cpu_per_request * 1e6, 1),
        "answer_alone_p50_us": round(alone[0] * 1e6, 2),
        "answer_alone_p99_us": round(alone[1] * 1e6, 2),
        "staleness_p50_s": round(stale[0], 3),
        "staleness_p99_s": round(stale[1], 3),
        "hard_limit_deny_s": round(deny, 3),
        "hard_limit_refused_s": round(refuse, 3),
    }


def idle_cpu(pid: int, seconds: float) -> float:
    """What serve's process tree spends in ``seconds`` with nothing asked of it."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def ask_httpx(
    url: str, headers: dict[str, str], picks: list[str], pid: int
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(a) and (b) with httpx's client: baseline and entitlement p50/p99, and serve's CPU
    per entitlement request."""
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for sub in picks[:200]:  # warm the connection and both processes
            http.get(f"/v1/entitlements/{sub}/api").raise_for_status()
        baseline = quantiles(timed(len(picks), lambda _: http.get("/openapi.json")))
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        entitled = quantiles(
            timed(len(picks), lambda n: http.get(f"/v1/entitlements/{picks[n]}/api"))
        )
        spent, took = cpu_seconds(pid) - cpu_before, time.monotonic() - began
        return baseline, entitled, (spent - idle_cpu(pid, took)) / len(picks)


def ask_aiohttp(
    url: str, headers: dict[str, str], picks: list[str], pid: int
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(a) and (b) with aiohttp's client, one request at a time."""

    async def run() -> tuple[tuple[float, float], tuple[float, float], float]:
        async with aiohttp.ClientSession(base_url=url, headers=headers) as session:

            async def each(paths: list[str]) -> list[float]:
                found = []
                for path in paths:
                    began = time.perf_counter()
                    async with session.get(path) as answer:
                        await answer.read()
                        assert answer.status == 200, answer.status
                    found.append(time.perf_counter() - began)
                return found

            await each([f"/v1/entitlements/{sub}/api" for sub in picks[:200]])  # warm up
            baseline = quantiles(await each(["/openapi.json"] * len(picks)))
            cpu_before, began = cpu_seconds(pid), time.monotonic()
            entitled = quantiles(await each([f"/v1/entitlements/{sub}/api" for sub in picks]))
            spent, took = cpu_seconds(pid) - cpu_before, time.monotonic() - began
            return baseline, entitled, (spent - idle_cpu(pid, took)) / len(picks)

    return asyncio.run(run())


def _wait_healthy(http: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600  # a million subscriptions take a while to load
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"serve exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if http.get("/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("serve did not become healthy")


def _post(http: httpx.Client, sub: str, quantity: int, event_id: str) -> dict[str, Any]:
    event = {"id": event_id, "subscription": sub, "meter": "api_calls", "quantity": quantity,
             "timestamp": datetime.now(UTC).isoformat(), "source": "bench"}  # fmt: skip
    answer = http.post("/v1/events", json=event)
    said: dict[str, Any] = answer.json()
    return said


def staleness(
    http: httpx.Client,
    feature: Callable[[str], dict[str, Any]],
    args: argparse.Namespace,
    rng: random.Random,
) -> tuple[float, float]:
    found = []
    for n in range(args.staleness_samples):
        sub = f"sub-{rng.randrange(1, args.subscriptions):06d}"
        before = int(feature(sub)["usage"])
        began = time.perf_counter()
        _post(http, sub, 1, f"stale-{n}")
        while int(feature(sub)["usage"]) == before:
            time.sleep(0.002)
        found.append(time.perf_counter() - began)
    return quantiles(found)


def hard_limit(http: httpx.Client, feature: Callable[[str], dict[str, Any]]) -> tuple[float, float]:
    """Seconds from the acknowledgement of the event that reaches the limit to the deny,
    and to the gateway's first refusal."""
    sub = "sub-000000"
    used = int(feature(sub)["usage"])
    _post(http, sub, LIMIT - used, "limit-reached")
    reached = time.perf_counter()
    while feature(sub)["has_access"]:
        time.sleep(0.002)
    denied = time.perf_counter() - reached
    probe = 0
    while not _post(http, sub, 1, f"probe-{probe}")["rejected"]:
        probe += 1
        time.sleep(0.002)
    return denied, time.perf_counter() - reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--staleness-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp",
                        help="the HTTP client of (a) and (b)")  # fmt: skip
    figures = run(parser.parse_args())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
