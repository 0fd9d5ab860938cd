"""Every stage's store over one connection, as the commands make them, for tests that
write through one stage and read through another."""

from __future__ import annotations

from dataclasses import dataclass

from aggregation.readers import PipelineReads
from aggregation.sink import PipelineSink
from base.clickhouse import Connection
from base.settings import Settings
from invoicing.sources import Sources
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
