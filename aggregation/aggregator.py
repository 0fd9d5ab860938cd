"""The worker's batch handling, without Faust: it readies each assigned partition (which
log it holds, the state to restore), places records by their log's epoch, runs the batch
step and makes its result durable, or ends the process before the batch is acknowledged.

Durability rule: the worker commits a batch's offsets only after ``handle`` returns
(``transport.BatchingConsumer.commit_durable``). ``handle`` writes synchronously (no await,
hence no cancellation point between processing and writing), and a write that cannot be
made durable ends the process *before* the batch is committed. Replays after any crash
are absorbed by the offset rule in ``state``; what a crash left half-written in a log
that is then lost is completed from the store (``_complete_tail``).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence, Set
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aggregation.alerts import AlertRules, CreditOf, crossings
from aggregation.batch import BatchProcessor
from aggregation.entitlements import Balances
from aggregation.live import LiveUsage
from aggregation.log_identity import Checkpoint, Judgement, fingerprint, ordinal
from aggregation.log_probe import probe
from aggregation.marks import Marks
from aggregation.model import BatchResult, RatedRows, Record
from aggregation.sink import PipelineSink
from aggregation.state import UsageState
from base import metrics
from base.events import EventWindow
from rating.period import Period
from rating.plans import PriceBook
from rating.table import ChargeTable
from subscriptions.directory import SubscriptionDirectory

log = logging.getLogger("meterline.worker")

# Young objects collected once this many have piled up, not 700: a batch allocates tens of
# thousands, nearly all freed by their reference counts, and each collection at the
# default threshold also walked everything that had survived one (issue 18: the batch step
# took 10.2 µs of CPU per event at (700, 10, 10), 7.7 at (50,000, 50, 100)).
GC_THRESHOLDS = (50_000, 50, 100)

WRITE_ATTEMPTS = 4
EXIT_STORE_UNAVAILABLE = 75  # EX_TEMPFAIL: a supervisor should restart us
EXIT_CANNOT_PROCESS = 70  # EX_SOFTWARE: a batch the code cannot handle; needs a person


class Aggregator:
    def __init__(
        self,
        sink: PipelineSink,
        subscriptions: SubscriptionDirectory,
        book: PriceBook,
        *,
        window: EventWindow,
        partitions: int,
        dedupe_window: timedelta,
        topic: str,
        marks: Marks | None = None,
        alerts: AlertRules | None = None,
        credit_of: CreditOf | None = None,
    ) -> None:
        self.sink = sink
        self.book = book
        self.topic = topic
        # Per partition: the epoch of the log being read (aggregation.log_identity), the
        # last durable record in it, and the offset of the last record handed to us.
        self.epochs: dict[int, int] = {}
        self.checkpoints: dict[int, Checkpoint] = {}
        self._last_offset: dict[int, int] = {}
        self._unprepared: set[int] = set()  # assigned, but log and state not checked yet
        self._rewound: set[int] = set()  # read again from the start: offsets go back once
        self.state = UsageState(marks)
        self.window = window
        self.dedupe_window = dedupe_window
        self._next_rotation = time.monotonic() + dedupe_window.total_seconds()
        self.subscriptions = subscriptions
        # Usage as of the last durable batch, by subscription: entitlements and alerts
        # read it (``live``, ``entitlements``, ``alerts``).
        self.live = LiveUsage()
        self.balances = Balances(book, subscriptions.entries, self.live)
        self.alerts = alerts if alerts is not None else AlertRules(lambda _: ())
        self.credit_of = credit_of  # prepaid credit balances, for their alerts
        self.processor = BatchProcessor(
            self.state,
            self.subscriptions.entries,
            book,
            ChargeTable.compile(book),
            window=window,
            partitions=partitions,
            catch_up=self.subscriptions.catch_up,
        )

    def _oldest_open_period(self) -> date:
        """The label of the first period an accepted event can still fall in, whatever
        its subscription's anchor day (the latest anchor starts the period earliest)."""
        anchor = self.subscriptions.latest_anchor
        return Period.of(self.window.bounds()[0].date(), anchor).label

    def reload(self, partitions: set[int]) -> None:
        self.state.forget_partitions(partitions)
        self.live.forget_partitions(partitions)
        since = datetime.now(UTC) - self.dedupe_window
        live = RatedRows()  # filled by the read of the totals, for the live usage
        self.state.restore(
            self.sink.load_marks(partitions, since),
            self.sink.load_totals(partitions, self._oldest_open_period(), live),
            self.sink.load_refusals(partitions, since),
            self.sink.load_distinct(partitions, self._oldest_open_period()),
            partitions=partitions,
        )
        self.balances.judge(self.live.absorb(live))
        log.info(
            "restored state of partitions %s: %d marks, %d totals",
            sorted(partitions), len(self.state.marks), len(self.state.totals),
        )  # fmt: skip

    def assigned(self, partitions: set[int]) -> None:
        """Note what the group gave us; ``prepare`` readies it before a record is handled."""
        self._unprepared |= partitions

    async def prepare(self, bootstrap_servers: str) -> set[int]:
        """Before a batch: identify the logs of newly assigned partitions and reload their
        state; return the partitions that hold a new log, to be read from their start.
        This runs in the stream loop: Faust resumes fetching while its assignment callbacks
        still run, so a callback that awaits could lose the race to a batch."""
        if not self._unprepared:
            return set()
        partitions, self._unprepared = self._unprepared, set()
        found, tails = await self.identify_logs(bootstrap_servers, partitions)
        self.reload(partitions)
        for partition, (epoch, after) in sorted(tails.items()):
            self._complete_tail(partition, epoch, after)
        # What was just restored (and the subscriptions loaded before it) lives as long as
        # the partition: moved out of the collector's sight, it is never walked again. It
        # is still freed when nothing refers to it any more.
        gc.freeze()
        self._rewound |= found
        return found

    async def identify_logs(
        self, bootstrap_servers: str, partitions: set[int]
    ) -> tuple[set[int], dict[int, tuple[int, int | None]]]:
        """Is each partition still the log its newest checkpoint was taken in? A new one
        gets the next epoch, is recorded and is said out loud. Returns those partitions, and
        per partition the log (epoch) it was last read in with the offset of its last
        checkpoint there (None: none yet), after which the store may hold a batch cut
        short (``_complete_tail``)."""
        stored = self.sink.load_checkpoints(self.topic, partitions)
        latest = self.sink.latest_epochs(self.topic, partitions)
        verdicts = await probe(bootstrap_servers, self.topic, stored)
        for partition in partitions:
            self._last_offset.pop(partition, None)
            self.checkpoints.pop(partition, None)
            self.epochs[partition] = latest.get(partition, 0)
        # A checkpoint bounds the tail of its own log; a log found new since has none yet.
        tails: dict[int, tuple[int, int | None]] = {p: (self.epochs[p], None) for p in partitions}
        tails.update((c.partition, (c.epoch, c.offset)) for c in stored
                     if c.epoch == self.epochs[c.partition])  # fmt: skip
        found = set()
        for checkpoint in stored:
            judgement, reason = verdicts[checkpoint.partition]
            if judgement is Judgement.NEW_LOG:
                self._new_log(checkpoint.partition, checkpoint.offset, reason)
                found.add(checkpoint.partition)
            else:
                self.checkpoints[checkpoint.partition] = checkpoint
        return found, tails

    def _complete_tail(self, partition: int, epoch: int, after: int | None) -> None:
        """Finish what a batch left half-written when the worker holding the partition
        stopped. A crash between a batch's writes can leave its billed events stored (and
        so their dedupe marks) without, maybe, their totals. In the same log the batch is
        read again and the replay rule counts what is missing; but a new log never shows
        those records again, and the events resent into it would be taken for duplicates.
        So the billed events stored after the log's last checkpoint (``after``) are run
        through the step again at their places, which counts exactly what their totals
        lack and nothing twice (``state``), whichever log comes next."""
        tail = self.sink.load_tail(partition, epoch, after)
        if not tail:
            return
        result = self.processor.process(tail)
        # No alert crossings to look for: a batch's crossings are written before its
        # events (``sink``), so those of a stored tail are stored already.
        self.sink.write_batch(BatchResult(rated=result.rated, distinct=result.distinct))
        self.balances.judge(self.live.absorb(result.rated))
        log.warning(
            "partition %d: completed %d records stored after its last checkpoint (%d totals "
            "rewritten)", partition, len(tail), len(result.rated),
            extra={"partition": partition, "records": len(tail), "epoch": epoch},
        )  # fmt: skip

    def _new_log(self, partition: int, previous_offset: int, reason: str) -> None:
        epoch = self.epochs.get(partition, 0) + 1
        self.sink.record_new_log(self.topic, partition, epoch, previous_offset, reason)
        self.epochs[partition] = epoch
        self.checkpoints.pop(partition, None)
        metrics.NEW_LOGS.labels(str(partition)).inc()
        log.warning(
            "partition %d of %s holds a new log (%s): its events are billed as new, from "
            "epoch %d", partition, self.topic, reason, epoch,
            extra={"partition": partition, "epoch": epoch, "previous_offset": previous_offset},
        )  # fmt: skip

    async def positions(self, bootstrap_servers: str, messages: list[Any]) -> list[Record]:
        """The records of a batch, each placed by its log's epoch and its offset. Offsets
        that go back behind the last record handed to us are reported; they are a new
        log unless the broker still shows the last durable record where it was."""
        records = []
        for message in messages:
            partition, offset = message.partition, message.offset
            last = self._last_offset.get(partition)
            if partition in self._rewound and (last is None or offset <= last):
                self._rewound.discard(partition)  # as asked: the new log from its start
            elif last is not None and offset <= last:
                await self._went_backwards(bootstrap_servers, partition, offset, last)
            self._last_offset[partition] = offset
            epoch = self.epochs.get(partition, 0)
            records.append(Record(partition, ordinal(epoch, offset), message.value))
        return records

    async def _went_backwards(
        self, bootstrap_servers: str, partition: int, offset: int, last: int
    ) -> None:
        metrics.OFFSETS_BACKWARDS.labels(str(partition)).inc()
        log.warning("partition %d of %s went back from offset %d to %d",
                    partition, self.topic, last, offset)  # fmt: skip
        checkpoint = self.checkpoints.get(partition)
        if checkpoint is None:
            # Nothing of this log is durable yet, so there is nothing to compare with; a
            # replay taken for new events is still caught by its dedupe mark.
            self._new_log(partition, last, f"offsets went back from {last} to {offset}")
            return
        verdicts = await probe(bootstrap_servers, self.topic, [checkpoint])
        judgement, reason = verdicts[partition]
        if judgement is Judgement.NEW_LOG:
            self._new_log(partition, checkpoint.offset, reason)

    def checkpoints_of(self, messages: list[Any]) -> list[Checkpoint]:
        """Per partition, the batch's last record: what the store keeps once it is durable."""
        last = {message.partition: message for message in messages}
        return [
            Checkpoint(partition, self.epochs.get(partition, 0), m.offset,
                       fingerprint(m.key, m.value, round(m.timestamp * 1000)))
            for partition, m in last.items()
        ]  # fmt: skip

    def _retain(self) -> None:
        """Once per dedupe window: rotate the marks, drop totals no event can reach."""
        now = time.monotonic()
        if now < self._next_rotation:
            return
        self._next_rotation = now + self.dedupe_window.total_seconds()
        forgotten = self.state.rotate_marks()
        dropped = self.state.forget_totals_before(self._oldest_open_period())
        self.live.forget_before(self._oldest_open_period())
        log.info("dedupe window rotated: %d marks and %d closed totals dropped", forgotten, dropped)

    def handle(
        self,
        records: list[Record],
        checkpoints: Sequence[Checkpoint],
        copies: Set[tuple[int, int]] = frozenset(),
    ) -> BatchResult:
        """``copies``: the (partition, offset) of records that are forwarded copies."""
        self._retain()
        try:
            result = self.processor.process(records, copies)
        except Exception:
            # Raising would leave the batch to whatever Faust's fetcher does with an error:
            # stop instead, with the batch uncommitted.
            log.critical("cannot process a batch: exiting without acknowledging it", exc_info=True)
            os._exit(EXIT_CANNOT_PROCESS)
        result.crossings = crossings(self.alerts, self.live, result.rated, self.book,
                                     datetime.now(UTC), credit_of=self.credit_of)  # fmt: skip
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                began = time.perf_counter()
                self.sink.write_batch(result, self.topic, checkpoints)
                metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - began)
                self.checkpoints.update((c.partition, c) for c in checkpoints)
                self.balances.judge(self.live.absorb(result.rated))
                _count(result, self.state)
                return result
            except Exception:
                metrics.STORE_WRITE_ERRORS.inc()
                log.exception("store write failed (attempt %d of %d)", attempt, WRITE_ATTEMPTS)
                time.sleep(0.5 * 2**attempt)
        log.critical("store unavailable: exiting without acknowledging the batch")
        os._exit(EXIT_STORE_UNAVAILABLE)


LATE = timedelta(hours=1)


def _count(result: BatchResult, state: UsageState) -> None:
    """The batch's figures, once it is durable."""
    accepted, rejected = len(result.accepted), len(result.rejected)
    taken = accepted + rejected + result.duplicates + len(result.forwarded)
    metrics.EVENTS_CONSUMED.inc(taken)
    metrics.BATCH_EVENTS.observe(taken)
    metrics.EVENTS_FORWARDED.inc(len(result.forwarded))
    metrics.EVENTS_AGGREGATED.inc(accepted)
    metrics.EVENTS_DEDUPLICATED.inc(result.duplicates)
    for rejection in result.rejected:
        metrics.EVENTS_REJECTED.labels(rejection.reason).inc()
    late_before = datetime.now(UTC) - LATE
    metrics.EVENTS_LATE.inc(sum(1 for e in result.accepted.events if e.timestamp < late_before))
    metrics.TOTALS_RATED.inc(len(result.rated))
    metrics.RATING_SECONDS.observe(result.rating_seconds)
    for table, rows in (("events", accepted), ("rated_usage", len(result.rated)),
                        ("rejected_events", rejected)):  # fmt: skip
        metrics.STORE_ROWS.labels(table).inc(rows)
    metrics.STATE_ENTRIES.labels("dedupe_marks").set(len(state.marks))
    metrics.STATE_ENTRIES.labels("totals").set(len(state.totals))


def tune_garbage_collector() -> None:
    """The collector's thresholds for a process that runs the batch step (``GC_THRESHOLDS``)."""
    gc.set_threshold(*GC_THRESHOLDS)
