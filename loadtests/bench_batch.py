"""The worker's batch step without Kafka: records of demo events through
``BatchProcessor.process`` and ``PipelineSink.write_batch`` (chDB), in CPU time per event.

    python -m loadtests.bench_batch [--events 200000] [--subscriptions 10000] [--runs 3]

Baseline measured in the same run: decoding the same records alone (the least any step
must do with them), so the ratio says what validation, dedupe, aggregation, rating and
the store write cost on top, with the collector thresholds the worker runs with. CPU time
(process_time), the best of the runs: the stable figure on a shared machine. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregation.aggregator import tune_garbage_collector
from aggregation.batch import BatchProcessor
from aggregation.model import Record
from aggregation.sink import PipelineSink
from aggregation.state import UsageState
from base.clickhouse import Connection
from base.events import EventWindow, UsageEvent, decode_record, encode_batch, partition_of
from base.settings import Settings
from meterline.demo import PRICE_BOOK, generator
from rating.loading import load_price_book
from rating.table import ChargeTable
from subscriptions.directory import fixed
from subscriptions.model import Terms

PARTITIONS = 4
RECORD_EVENTS = 500  # what the gateway and the SDK put in a record
BATCH_RECORDS = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    tune_garbage_collector()  # as the worker runs it
    book = load_price_book(PRICE_BOOK)
    period = datetime.now(UTC).date().replace(day=1)
    subs = generator.subscriptions(options.subscriptions, list(book.versions), 7, period)
    events = list(generator.events(subs, options.events, period, duplicate_share=0.05, seed=7))
    records = _records(events)
    plans = {(s.tenant, s.subscription): Terms(s.plan, None, 1) for s in subs}
    window = EventWindow(timedelta(days=70), timedelta(minutes=5))
    settings = Settings(data_dir=Path(tempfile.mkdtemp()),
                        clickhouse_database=f"bench_{uuid.uuid4().hex[:8]}")  # fmt: skip
    connection = Connection.open(settings)
    sink = PipelineSink(connection)
    decode, step = [], []
    for _ in range(options.runs):
        began = time.process_time()
        for _, _, payload in records:
            decode_record(payload)
        decode.append(time.process_time() - began)
        processor = BatchProcessor(UsageState(), fixed(plans), book, ChargeTable.compile(book),
                                   window=window, partitions=PARTITIONS)  # fmt: skip
        began = time.process_time()
        for start in range(0, len(records), BATCH_RECORDS):
            sink.write_batch(processor.process(records[start : start + BATCH_RECORDS]))
        step.append(time.process_time() - began)
    connection.drop_database()
    connection.close()
    step_us = round(min(step) / len(events) * 1e6, 2)
    decode_us = round(min(decode) / len(events) * 1e6, 2)
    figures = {
        "events": len(events),
        "step_cpu_us_per_event": step_us,
        "decode_cpu_us_per_event": decode_us,
        "ratio_to_decode": round(step_us / max(decode_us, 1e-9), 1),
        "step_runs_s": [round(run, 3) for run in step],
    }
    print(f"batch step (process + write_batch): {figures['step_cpu_us_per_event']} µs CPU per "
          f"event; decode alone {figures['decode_cpu_us_per_event']} µs "
          f"({figures['ratio_to_decode']}x)")  # fmt: skip
    print(json.dumps(figures))


def _records(events: list[UsageEvent]) -> list[Record]:
    """Each partition's events in records of ``RECORD_EVENTS``, as producers send them."""
    by_partition: dict[int, list[UsageEvent]] = {}
    for event in events:
        by_partition.setdefault(partition_of(event.partition_key(), PARTITIONS), []).append(event)
    return [Record(partition, number, encode_batch(own[start : start + RECORD_EVENTS]))
            for partition, own in by_partition.items()
            for number, start in enumerate(range(0, len(own), RECORD_EVENTS))]  # fmt: skip


if __name__ == "__main__":
    main()
