"""The one catalogue of meterline's metrics: name, type, help, unit and labels of each.

Names follow Prometheus conventions (``meterline_`` prefix, ``_total`` counters, units
as suffixes). Labels are bounded: a reason, a route, a status, a table, a partition,
and the tenant on the gateway's accepted events (to see a tenant fall silent); never a
subscription id. The dashboard and the alert rules in ``deploy/``
use only names from here, which a test checks.

The worker also carries Faust's own sensor (``meterline_faust_*``: rebalances, assignment
and send latency, records per partition), which counts Kafka records, not events.

Several gateway processes share their metrics through prometheus_client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``), which ``exposition`` reads when it is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

Kind = Literal["counter", "gauge", "histogram"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
AGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000)


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Kind
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS


CATALOGUE: list[Spec] = []


def _counter(spec: Spec) -> Counter:
    CATALOGUE.append(spec)
    # prometheus_client adds _total itself and wants the name without it.
    return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels)


def _gauge(spec: Spec) -> Gauge:
    CATALOGUE.append(spec)
    return Gauge(spec.name, spec.help, spec.labels, multiprocess_mode="livesum")


def _histogram(spec: Spec) -> Histogram:
    CATALOGUE.append(spec)
    return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets)


# The gateway
GATEWAY_REQUESTS = _counter(Spec(
    "meterline_gateway_requests_total", "counter",
    "HTTP requests the gateway answered, by route and status", labels=("route", "status"),
))  # fmt: skip
GATEWAY_REQUEST_SECONDS = _histogram(Spec(
    "meterline_gateway_request_seconds", "histogram",
    "Time to answer a request, Kafka's acknowledgement included", "seconds", ("route",),
))  # fmt: skip
EVENTS_RECEIVED = _counter(Spec(
    "meterline_events_received_total", "counter", "Events the gateway received",
))  # fmt: skip
EVENTS_ACCEPTED = _counter(Spec(
    "meterline_events_accepted_total", "counter",
    "Events the gateway accepted, each acknowledged by Kafka, by tenant (tenants are the "
    "operator's few customers, so the label stays bounded; subscriptions never are labels)",
    labels=("tenant",),
))  # fmt: skip
EVENTS_REFUSED = _counter(Spec(
    "meterline_events_refused_total", "counter",
    "Events the gateway refused, by reason (the sender is told which and why)",
    labels=("reason",),
))  # fmt: skip

# The worker
EVENTS_CONSUMED = _counter(Spec(
    "meterline_events_consumed_total", "counter", "Events the worker read from the topic",
))  # fmt: skip
EVENTS_AGGREGATED = _counter(Spec(
    "meterline_events_aggregated_total", "counter",
    "Distinct events the worker added to period-to-date totals",
))  # fmt: skip
EVENTS_DEDUPLICATED = _counter(Spec(
    "meterline_events_deduplicated_total", "counter",
    "Events dropped as already counted (same tenant, source, id and meter)",
))  # fmt: skip
EVENTS_REJECTED = _counter(Spec(
    "meterline_events_rejected_total", "counter",
    "Events the worker sent to the dead-letter topic, by reason", labels=("reason",),
))  # fmt: skip
EVENTS_FORWARDED = _counter(Spec(
    "meterline_events_forwarded_total", "counter",
    "Events that reached another partition than their subscription's, sent on to it",
))  # fmt: skip
EVENTS_LATE = _counter(Spec(
    "meterline_events_late_total", "counter",
    "Aggregated events stamped more than an hour before the worker read them",
))  # fmt: skip
TOTALS_RATED = _counter(Spec(
    "meterline_totals_rated_total", "counter", "Period-to-date totals rated and written",
))  # fmt: skip
BATCH_EVENTS = _histogram(Spec(
    "meterline_batch_events", "histogram", "Events per worker batch", "events",
    buckets=SIZE_BUCKETS,
))  # fmt: skip
RATING_SECONDS = _histogram(Spec(
    "meterline_rating_seconds", "histogram", "Time to rate a batch's changed totals", "seconds",
))  # fmt: skip
STORE_WRITE_SECONDS = _histogram(Spec(
    "meterline_store_write_seconds", "histogram", "Time to write a batch to ClickHouse",
    "seconds",
))  # fmt: skip
STORE_ROWS = _counter(Spec(
    "meterline_store_rows_written_total", "counter", "Rows written to ClickHouse, by table",
    labels=("table",),
))  # fmt: skip
STORE_WRITE_ERRORS = _counter(Spec(
    "meterline_store_write_errors_total", "counter",
    "Failed ClickHouse writes (each is retried; the worker exits after the last attempt)",
))  # fmt: skip
EVENT_AGE_SECONDS = _histogram(Spec(
    "meterline_event_age_seconds", "histogram",
    "From a record's produce time to its events being queryable in ClickHouse, per record",
    "seconds", buckets=AGE_BUCKETS,
))  # fmt: skip
CONSUMER_LAG = _gauge(Spec(
    "meterline_consumer_lag_records", "gauge",
    "Records of the events topic not yet made durable, per partition", "records",
    ("partition",),
))  # fmt: skip
OFFSETS_BACKWARDS = _counter(Spec(
    "meterline_offsets_backwards_total", "counter",
    "Times a partition's offsets went back behind what the worker had made durable",
    labels=("partition",),
))  # fmt: skip
NEW_LOGS = _counter(Spec(
    "meterline_new_logs_total", "counter",
    "Partitions found holding a new log (a recreated topic, a restarted memory broker, "
    "another cluster): its events are billed as new, never taken for replays",
    labels=("partition",),
))  # fmt: skip
UNACCOUNTED_EVENTS = _gauge(Spec(
    "meterline_unaccounted_events", "gauge",
    "Acknowledged events of the last hour's records that the store does not account for as "
    "billed, duplicate or dead-lettered (meterline reconcile); 0 when the identity holds",
    "events",
))  # fmt: skip
STATE_ENTRIES = _gauge(Spec(
    "meterline_state_entries", "gauge",
    "Entries the worker keeps in memory: dedupe marks and period-to-date totals",
    labels=("kind",),
))  # fmt: skip


STORE_TABLE_ROWS = _gauge(Spec(
    "meterline_store_table_rows", "gauge", "Rows in each meterline ClickHouse table (active parts)",
    "rows", ("table",),
))  # fmt: skip
STORE_TABLE_BYTES = _gauge(Spec(
    "meterline_store_table_bytes", "gauge",
    "Compressed bytes of each meterline ClickHouse table on disk", "bytes", ("table",),
))  # fmt: skip
INVOICE_RUNS = _gauge(Spec(
    "meterline_invoice_runs", "gauge",
    "Invoice runs recorded in the store (meterline invoices close or finalize), per action",
    "runs", ("action",),
))  # fmt: skip
INVOICE_LAST_RUN = _gauge(Spec(
    "meterline_invoice_last_run_timestamp_seconds", "gauge",
    "When the last invoice run of each action was recorded (Unix time)", "seconds",
    ("action",),
))  # fmt: skip


def exposition() -> tuple[bytes, str]:
    """The text format of every metric of this process, or of all gateway processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
