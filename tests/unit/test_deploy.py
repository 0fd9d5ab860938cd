"""The deployment files agree with the code: docker-compose.yml sets only settings that
exist, with values they accept, on the ports Prometheus scrapes and the health checks
probe; its commands are meterline commands; alerts and the dashboard use only catalogued
metrics. (The compose file cannot run here: there is no Docker engine.)"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from base.metrics import CATALOGUE
from base.settings import Settings
from meterline.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
METERLINE_SERVICES = ("migrate", "gateway", "worker")
PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
ALERTS = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/meterline.json").read_text())


def environment(service: str) -> dict[str, str]:
    return {name: str(value) for name, value in SERVICES[service]["environment"].items()}


@pytest.mark.parametrize("service", METERLINE_SERVICES)
def test_each_service_sets_only_real_settings_with_valid_values(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "METERLINE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    known = {"KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"} | {
        f"METERLINE_{name.upper()}" for name in Settings.model_fields
    }
    env = environment(service)
    assert set(env) <= known, f"{service}: unknown settings {set(env) - known}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert not settings.embedded_kafka and settings.clickhouse_url is not None
    assert settings.idempotent_producer, "real Kafka: the idempotent producer"


@pytest.mark.parametrize("service", METERLINE_SERVICES)
def test_each_service_runs_a_meterline_command(service: str) -> None:
    name, *arguments = SERVICES[service]["command"]
    command = main.get_command(main.make_context("meterline", [name]), name)
    assert command is not None, f"{service}: no command {name!r}"
    if isinstance(command, type(main)):
        sub, *arguments = arguments
        command = command.get_command(main.make_context("meterline", [name]), sub)
        assert command is not None
    command.make_context(name, list(arguments))  # raises on an unknown option


def test_ports_agree_between_settings_health_checks_and_prometheus() -> None:
    gateway, worker = environment("gateway"), environment("worker")
    gateway_port, worker_port = (
        gateway["METERLINE_GATEWAY_PORT"],
        worker["METERLINE_WORKER_WEB_PORT"],
    )
    assert gateway["METERLINE_GATEWAY_HOST"] == worker["METERLINE_WORKER_WEB_HOST"] == "0.0.0.0"
    assert f"{gateway_port}:{gateway_port}" in SERVICES["gateway"]["ports"]
    assert f":{gateway_port}/v1/health" in " ".join(SERVICES["gateway"]["healthcheck"]["test"])
    assert f":{worker_port}/health" in " ".join(SERVICES["worker"]["healthcheck"]["test"])
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert jobs["meterline-gateway"]["static_configs"][0]["targets"] == [f"gateway:{gateway_port}"]
    [discovery] = jobs["meterline-worker"]["dns_sd_configs"]
    assert (discovery["names"], str(discovery["port"])) == (["worker"], worker_port)


def test_the_services_find_kafka_and_clickhouse_where_they_listen() -> None:
    env = environment("worker")
    kafka = environment("kafka")
    assert f"PLAINTEXT://{env['KAFKA_BOOTSTRAP_SERVERS']}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    url = urlsplit(env["CLICKHOUSE_URL"])
    clickhouse = environment("clickhouse")
    assert (url.hostname, url.port) == ("clickhouse", 8123)
    assert (url.username, url.password) == (clickhouse["CLICKHOUSE_USER"],
                                            clickhouse["CLICKHOUSE_PASSWORD"])  # fmt: skip
    assert SERVICES["worker"]["deploy"]["replicas"] == 2


def metric_names(expression: str) -> set[str]:
    return {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for name in re.findall(r"\bmeterline_[a-z_]+", expression)
    }


CATALOGUED = {spec.name for spec in CATALOGUE}


def test_alerts_use_catalogued_metrics_and_say_what_to_do() -> None:
    rules = [rule for group in ALERTS["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} >= {
        "MeterlineConsumerLagGrowing", "MeterlineDeadLetterRate", "MeterlineEventAgeOverSLO",
        "MeterlineStoreWriteErrors", "MeterlineTenantSilent",
    }  # fmt: skip
    for rule in rules:
        assert metric_names(rule["expr"]) <= CATALOGUED, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
    assert PROMETHEUS["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_the_dashboard_uses_catalogued_metrics() -> None:
    expressions = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    used = set().union(*map(metric_names, expressions))
    assert used <= CATALOGUED
    assert {"meterline_consumer_lag_records", "meterline_event_age_seconds",
            "meterline_events_rejected_total", "meterline_store_write_seconds"} <= used  # fmt: skip


def test_the_image_holds_every_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert all(f"COPY {package} ./{package}" in dockerfile for package in packages)
