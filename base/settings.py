"""One frozen, validated settings object, read from the environment and an optional TOML file.

With no ``KAFKA_BOOTSTRAP_SERVERS`` the embedded broker is started; with no
``CLICKHOUSE_URL`` the in-process chDB engine is used on ``data_dir``. Pointing
meterline at a real cluster is a change of these two variables, not of code.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from base.events import EventWindow

CONFIG_FILE_VARIABLE = "METERLINE_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERLINE_", frozen=True, extra="forbid")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "METERLINE_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="host:port[,host:port]; unset starts the embedded broker",
    )
    clickhouse_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CLICKHOUSE_URL", "METERLINE_CLICKHOUSE_URL"),
        description="http(s)://user:password@host:port; unset uses chDB on data_dir",
    )
    kafka_idempotence: bool = Field(
        default=True,
        description="the idempotent producer (Apache Kafka); always off with the embedded "
        "broker, which does not support it",
    )
    clickhouse_database: str = Field(default="meterline", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    data_dir: Path = Path(".meterline")
    events_topic: str = "usage.events"
    subscriptions_topic: str = Field(
        default="meterline.subscriptions",
        description="compacted topic on which subscription changes reach every worker",
    )
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    consumer_group: str = "meterline-aggregator"
    batch_max_records: int = Field(
        default=50_000, ge=1, description="records per worker batch, at most"
    )
    batch_max_bytes: int = Field(
        default=16 << 20, ge=1024,
        description="bytes of records per worker batch, at most (a record holds up to 500 "
        "events, about 150 bytes each)",
    )  # fmt: skip
    batch_within_seconds: float = Field(
        default=0.1, gt=0, description="a batch closes this long after its first record"
    )
    dedupe_window_hours: float = Field(
        default=24.0, gt=0, le=35 * 24,
        description="an event re-sent within this window counts once (up to 35 days)",
    )  # fmt: skip
    dedupe_marks: Literal["memory", "disk"] = Field(
        default="disk",
        description="where a worker keeps dedupe marks: on local disk behind a Bloom filter "
        "(about 3 bytes of RAM per mark), or in memory (about 120 bytes per mark)",
    )
    max_event_age_days: int = Field(
        default=35, ge=1, description="older events go to the dead-letter topic (as Stripe's 35)"
    )
    max_clock_skew_seconds: float = Field(
        default=300.0, ge=0, description="events stamped further in the future are refused"
    )
    price_book: Path | None = Field(
        default=None,
        description="YAML price book, a file or a folder of files; unset uses the demo's",
    )

    gateway_host: str = Field(default="127.0.0.1", description="address `meterline serve` binds")
    gateway_port: int = Field(default=8787, ge=1, le=65535)
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="the worker's HTTP port (health; in embedded mode, usage reads and "
        "subscription changes the gateway forwards); 0: off",
    )
    internal_secret: SecretStr | None = Field(
        default=None,
        description="what the gateway shows the worker's internal pages (usage reads, "
        "subscription changes); `meterline serve` makes one for each run; unset: those pages "
        "refuse every caller",
    )
    usage_reads: Literal["store", "worker", "off"] = Field(
        default="store",
        description="where the gateway reads current usage and makes subscription changes: "
        "the store itself, the worker that owns chDB (at worker_web_port), or nowhere",
    )
    dunning_interval_hours: float = Field(
        default=24.0,
        ge=0,
        description="how often `meterline serve` runs dunning (reminders and retries of unpaid "
        "invoices); 0: never (run `meterline dunning run` yourself)",
    )
    refuse_over_hard_limit: bool = Field(
        default=False,
        description="the gateway refuses events of a meter a subscription has used its hard "
        "limit of (hard_limit_reached) instead of accepting and billing them",
    )
    webhook_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="how often `meterline serve` delivers webhooks that are due (new events "
        "and retries); 0: never (run `meterline webhooks deliver` yourself)",
    )
    credits_low_percent: Decimal = Field(
        default=Decimal(20),
        ge=0,
        le=100,
        description="a prepaid credit grant is low (the credits.low webhook) once its balance "
        "is this percent of its amount or less",
    )
    portal_secret: SecretStr | None = Field(
        default=None,
        description="what customers' portal links are signed with; unset: one made once and "
        "kept in portal-secret in data_dir (links stay valid across restarts)",
    )
    portal_base_url: str = Field(
        default="",
        description="where customers reach the portal (https://billing.example.com); unset: "
        "the gateway's own address",
    )
    api_keys_file: Path | None = Field(
        default=None, description="hashed API keys (JSON); unset: api-keys.json in data_dir"
    )
    max_request_bytes: int = Field(default=8 << 20, ge=1024, description="413 beyond it")
    max_batch_events: int = Field(default=1000, ge=1, description="413 beyond it")
    max_event_bytes: int = Field(default=64 << 10, ge=256, description="larger events refused")
    tenant_events_per_second: float = Field(
        default=100_000, gt=0, description="each tenant's sustained rate; 429 beyond it"
    )
    tenant_burst_events: int = Field(default=200_000, ge=1, description="events at once")
    seller_name: str = Field(default="", description="who issues the invoices: the seller")
    seller_address: str = Field(default="", description="the seller's address (lines: \\n)")
    seller_tax_id: str = Field(default="", description="the seller's VAT or tax number")
    seller_country: str = Field(
        default="",
        description="where the seller is (ISO 3166-1 alpha-2): an EU seller reverse-charges "
        "EU business customers of other member states; unset, none is",
    )
    tax_rates: Path | None = Field(
        default=None,
        description="VAT/GST rates by country and date (YAML, as invoicing/data/tax_rates.yaml); "
        "unset uses the built-in ones",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("price_book", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        """``METERLINE_PRICE_BOOK=`` means the demo's book, not every YAML file here."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def idempotent_producer(self) -> bool:
        return self.kafka_idempotence and not self.embedded_kafka

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.events_topic}.dlq"

    def event_window(self) -> EventWindow:
        return EventWindow(
            max_age=timedelta(days=self.max_event_age_days),
            max_skew=timedelta(seconds=self.max_clock_skew_seconds),
        )

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api-keys.json"

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "chdb").resolve()

    def clickhouse_dsn(self) -> str:
        """The clickhouse-connect DSN; the secret is revealed only here, never printed."""
        if self.clickhouse_url is not None:
            return self.clickhouse_url.get_secret_value()
        return f"chdb://{self.chdb_path}"

    def internal_key(self) -> str:
        """The secret of the worker's internal pages, as text; "" when there is none."""
        return self.internal_secret.get_secret_value() if self.internal_secret else ""

    def portal_key(self) -> str:
        """The secret portal links are signed with: ``portal_secret``, or the one kept in
        data_dir, made on first use (readable by its owner only)."""
        if self.portal_secret is not None:
            return self.portal_secret.get_secret_value()
        kept = self.data_dir / "portal-secret"
        if not kept.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            made = kept.with_suffix(f".{os.getpid()}")
            made.write_text(secrets.token_urlsafe(32))
            made.chmod(0o600)
            try:  # a link, not a rename: if two processes make one at once, the first wins
                os.link(made, kept)
            except FileExistsError:
                pass
            finally:
                made.unlink()
        return kept.read_text().strip()

    @property
    def portal_url(self) -> str:
        """The portal's base URL, without a trailing "/"."""
        base = self.portal_base_url or f"http://{self.gateway_host}:{self.gateway_port}"
        return base.rstrip("/")

    def describe(self) -> dict[str, Any]:
        """What is safe to show a person: no secrets."""
        return {
            "kafka": self.kafka_bootstrap_servers or "embedded (Tansu on 127.0.0.1)",
            "clickhouse": "server (CLICKHOUSE_URL)"
            if self.clickhouse_url
            else f"embedded chDB at {self.chdb_path}",
            "database": self.clickhouse_database,
            "topic": f"{self.events_topic} ({self.topic_partitions} partitions)",
            "dead letters": self.dead_letter_topic,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)
