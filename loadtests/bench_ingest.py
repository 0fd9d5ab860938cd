"""Ingest throughput: events accepted per second through the HTTP gateway and through the
SDK's Kafka mode, against raw produce measured in the same run, all on this machine
(the broker, the gateway process and the clients share its cores).

    python -m loadtests.bench_ingest [--events N] [--batch N] [--connections N] [--processes N]

(a) ceiling: one aiokafka producer sending the same events, already checked and grouped
    in records of 500 per partition (meterline's own producer path), acks=all.
(b) HTTP: `meterline serve --no-worker --processes 2` (two gateway processes sharing the
    port, by default; the gateway is CPU-bound in Python); clients post CloudEvents
    batches (bodies encoded beforehand, so the client costs little) over several
    connections; each answer comes after Kafka acknowledged its events. Events/s and
    the p50/p99 request latency, and the gateway's CPU time per event (its processes
    together, from the kernel's accounting: the stable figure on a shared machine).
(c) SDK, Kafka mode: `AsyncUsageClient.kafka(...).record(...)` per event, checked as the
    gateway checks, batched and sent; events/s until the last is acknowledged.

The last line is one JSON object with the figures and each one's ratio to (a).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from base.events import UsageEvent
from base.kafka_admin import ensure_topic
from base.processes import cpu_seconds
from base.settings import Settings
from ingest.api_keys import KeyRing
from ingest.client import AsyncUsageClient
from ingest.producer import Publisher
from meterline.demo import PRICE_BOOK
from meterline.embedded_broker import EmbeddedBroker, free_port
from meterline.worker_process import settings_env
from rating.loading import load_price_book

SUBSCRIPTIONS = 10_000


def cloud_batches(events: int, batch: int, seed: int) -> list[bytes]:
    """Request bodies of ``batch`` CloudEvents each: API calls and grouped tokens."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=1)
    bodies = []
    for start in range(0, events, batch):
        items = []
        for number in range(start, min(events, start + batch)):
            kind = rng.random() < 0.5
            items.append({
                "specversion": "1.0", "id": f"e{number}", "source": "bench",
                "type": "api_calls" if kind else "tokens",
                "subject": f"sub-{rng.randrange(SUBSCRIPTIONS)}", "time": now.isoformat(),
                "data": {"quantity": rng.randint(1, 50)} if kind
                else {"quantity": rng.randint(1, 4000), "model": rng.choice(["small", "large"])},
            })  # fmt: skip
        bodies.append(msgspec.json.encode(items))
    return bodies


def usage_events(events: int, seed: int) -> list[UsageEvent]:
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=1)
    return [
        UsageEvent(f"e{n}", "bench", f"sub-{rng.randrange(SUBSCRIPTIONS)}", "api_calls",
                   rng.randint(1, 50), now, "bench")
        for n in range(events)
    ]  # fmt: skip


async def raw_produce(bootstrap: str, topic: str, events: list[UsageEvent]) -> float:
    async with Publisher(bootstrap, topic) as publisher:
        began = time.perf_counter()
        await publisher.send(events)
        return len(events) / (time.perf_counter() - began)


async def post_all(
    host: str, port: int, key: str, bodies: list[bytes], connections: int
) -> list[float]:
    """Latency of each request; every answer must accept its whole batch. A bare HTTP/1.1
    keep-alive client on asyncio streams (like wrk), so the client takes little of the
    cores the gateway and the broker need."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/cloudevents-batch+json\r\n"
    ).encode()

    async def poster() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                began = time.perf_counter()
                writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status, answer = await _response(reader)
                latencies.append(time.perf_counter() - began)
                if status != 202 or json.loads(answer)["rejected"]:
                    raise SystemExit(f"the gateway refused events: {answer[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(poster() for _ in range(connections)))
    return latencies


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    return status, await reader.readexactly(length)


def start_gateway(settings: Settings, bootstrap: str, processes: int) -> subprocess.Popen[bytes]:
    env = settings_env(settings, bootstrap)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve", "--no-worker", "--processes", str(processes)],
        env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise SystemExit("the gateway exited at start; run `meterline serve` to see why")
        try:
            url = f"http://{settings.gateway_host}:{settings.gateway_port}/v1/health"
            if httpx.get(url).status_code == 200:
                return gateway
        except httpx.TransportError:
            time.sleep(0.2)
    gateway.kill()
    raise SystemExit("the gateway did not answer within 60 s")


async def sdk_kafka(settings: Settings, bootstrap: str, events: int, seed: int) -> float:
    rng = random.Random(seed)
    book = load_price_book(PRICE_BOOK)
    async with AsyncUsageClient.kafka(settings, bootstrap, "bench", book) as usage:
        began = time.perf_counter()
        for _ in range(events):
            await usage.record(f"sub-{rng.randrange(SUBSCRIPTIONS)}", "api_calls", 3)
        await usage.flush()
        seconds = time.perf_counter() - began
    if usage.delivered != events:
        raise SystemExit(f"the SDK delivered {usage.delivered} of {events} events")
    return events / seconds


def run(events: int, batch: int, connections: int, processes: int, seed: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as scratch,
        EmbeddedBroker(log_path=Path(scratch) / "broker.log") as broker,
    ):
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap_servers, data_dir=Path(scratch),
            events_topic=f"bench.ingest.{run_id}", gateway_port=free_port(),
            tenant_events_per_second=10_000_000, tenant_burst_events=10_000_000,
            kafka_idempotence=False,  # the embedded broker does not support it
        )  # fmt: skip
        bootstrap = broker.bootstrap_servers
        asyncio.run(ensure_topic(bootstrap, settings.events_topic, settings.topic_partitions))
        print(f"raw produce of {events:,} events …", file=sys.stderr)
        raw = asyncio.run(raw_produce(bootstrap, settings.events_topic, usage_events(events, seed)))
        key, _ = KeyRing(settings.api_keys_path).create("bench", "bench")
        bodies = cloud_batches(events, batch, seed)
        gateway = start_gateway(settings, bootstrap, processes)
        try:
            print(f"HTTP: {len(bodies):,} batches of {batch} over {connections} connections …",
                  file=sys.stderr)  # fmt: skip
            cpu_before = cpu_seconds(gateway.pid)
            began = time.perf_counter()
            latencies = asyncio.run(
                post_all(settings.gateway_host, settings.gateway_port, key, bodies, connections)
            )
            http = events / (time.perf_counter() - began)
            gateway_cpu = cpu_seconds(gateway.pid) - cpu_before
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
        print(f"SDK, Kafka mode: {events:,} events …", file=sys.stderr)
        sdk = asyncio.run(sdk_kafka(settings, bootstrap, events, seed))
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "events": events,
        "batch": batch,
        "connections": connections,
        "gateway_processes": processes,
        "raw_produce_events_per_s": round(raw),
        "http_events_per_s": round(http),
        "http_vs_raw": round(http / raw, 3),
        "gateway_cpu_us_per_event": round(gateway_cpu / events * 1e6, 2),
        "http_request_p50_s": round(quantiles[49], 4),
        "http_request_p99_s": round(quantiles[98], 4),
        "sdk_kafka_events_per_s": round(sdk),
        "sdk_kafka_vs_raw": round(sdk / raw, 3),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=500, help="events per HTTP request")
    parser.add_argument("--connections", type=int, default=8, help="concurrent HTTP requests")
    parser.add_argument("--processes", type=int, default=2, help="gateway processes")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    figures = run(args.events, args.batch, args.connections, args.processes, args.seed)
    print(
        f"raw produce {figures['raw_produce_events_per_s']:,} events/s; HTTP "
        f"{figures['http_events_per_s']:,} events/s ({figures['http_vs_raw']:.2f}×), "
        f"{figures['gateway_cpu_us_per_event']:.1f} µs of gateway CPU per event, request "
        f"p50 {figures['http_request_p50_s'] * 1000:.0f} ms, p99 "
        f"{figures['http_request_p99_s'] * 1000:.0f} ms; SDK Kafka mode "
        f"{figures['sdk_kafka_events_per_s']:,} events/s ({figures['sdk_kafka_vs_raw']:.2f}×)",
        file=sys.stderr,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
