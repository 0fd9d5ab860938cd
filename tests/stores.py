"""Every stage's store over one connection, as the commands make them, for tests that
write through one stage and read through another."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aggregation.aggregator import Aggregator
from aggregation.alert_store import AlertStore
from aggregation.alerts import AlertRules
from aggregation.readers import PipelineReads
from aggregation.sink import PipelineSink
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.sources import Sources
from rating.plans import PriceBook
from subscriptions.directory import SubscriptionDirectory
from subscriptions.store import SubscriptionStore


@dataclass(frozen=True)
class Stores:
    """Every stage's store over one connection, as the commands make them."""

    connection: Connection
    subscriptions: SubscriptionStore
    sink: PipelineSink
    reads: PipelineReads
    sources: Sources

    @classmethod
    def over(cls, connection: Connection) -> Stores:
        sources = Sources.over(connection)
        return cls(connection, sources.subscriptions, PipelineSink(connection),
                   sources.pipeline, sources)  # fmt: skip

    @property
    def database(self) -> str:
        return self.connection.database

    @classmethod
    def open(cls, settings: Settings) -> Stores:
        return cls.over(Connection.open(settings))

    def close(self) -> None:
        self.connection.close()


def aggregator(stores: Stores, settings: Settings, book: PriceBook, home: int) -> Aggregator:
    """A worker's batch handling over the store, as ``run_worker`` makes it (alert rules
    read from the store), holding partition ``home``; ``prepare`` it before a batch."""
    directory = SubscriptionDirectory(stores.subscriptions.terms_written_since)
    made = Aggregator(
        stores.sink, directory, book, window=settings.event_window(),
        partitions=settings.topic_partitions, dedupe_window=timedelta(hours=24),
        topic=settings.events_topic,
        alerts=AlertRules(AlertStore(stores.connection).rules_written_since),
    )  # fmt: skip
    made.assigned({home})
    return made
