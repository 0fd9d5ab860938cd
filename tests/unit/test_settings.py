"""Settings come from the environment and a file, and never show a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from base.settings import Settings
from meterline.worker_process import settings_env


def test_defaults_select_the_embedded_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    settings = Settings()
    assert settings.embedded_kafka
    assert settings.clickhouse_dsn().startswith("chdb://")
    assert not settings.idempotent_producer, "the embedded broker rejects it"


def test_the_two_standard_variables_switch_to_real_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("CLICKHOUSE_URL", "https://user:hunter2@ch.internal:8443")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka-1:9092"
    assert settings.idempotent_producer
    assert not settings.model_copy(update={"kafka_idempotence": False}).idempotent_producer
    assert settings.clickhouse_dsn() == "https://user:hunter2@ch.internal:8443"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.describe())


def test_a_toml_file_supplies_settings_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "meterline.toml"
    config.write_text('topic_partitions = 12\nclickhouse_database = "billing"\n')
    monkeypatch.setenv("METERLINE_CONFIG", str(config))
    monkeypatch.setenv("METERLINE_TOPIC_PARTITIONS", "8")
    settings = Settings()
    assert (settings.topic_partitions, settings.clickhouse_database) == (8, "billing")


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_CLICKHOUSE_DATABASE", "drop table;")
    with pytest.raises(ValidationError):
        Settings()


def test_a_worker_process_sees_every_setting_of_its_parent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    parent = Settings(
        data_dir=tmp_path, clickhouse_url="https://u:secret@ch.internal:8443",
        clickhouse_database="billing", events_topic="t", dedupe_window_hours=6,
        price_book=tmp_path / "plans.yaml",
    )  # fmt: skip
    for variable, value in settings_env(parent, "kafka-1:9092").items():
        monkeypatch.setenv(variable, value)
    child = Settings()
    assert child.model_dump() | {"clickhouse_url": None} == parent.model_dump() | {
        "kafka_bootstrap_servers": "kafka-1:9092", "clickhouse_url": None,
    }  # fmt: skip
    assert child.clickhouse_dsn() == parent.clickhouse_dsn()


def test_a_blank_price_book_variable_means_the_demo_book(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a shell leaves it after `METERLINE_PRICE_BOOK= command`: not the current folder.
    monkeypatch.setenv("METERLINE_PRICE_BOOK", "")
    assert Settings().price_book is None
    monkeypatch.setenv("METERLINE_PRICE_BOOK", "plans/")
    assert Settings().price_book == Path("plans/")
