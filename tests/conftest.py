"""Shared fixtures: the real embedded broker once per session, a fresh ClickHouse
database (real chDB engine) and fresh topic names for each test, and a folder for the
dedupe marks kept on disk by a module's properties."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from base.clickhouse import Connection
from base.settings import Settings
from meterline.embedded_broker import EmbeddedBroker
from tests.stores import Stores


@pytest.fixture(scope="module")
def marks_folder() -> Iterator[Path]:
    """Where the disk marks of a property's examples go (a module's fixture: a property
    runs many examples per call, and each makes folders of its own under this one)."""
    folder = Path(tempfile.mkdtemp(prefix="marks-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


# Read before any test's monkeypatch clears it from the environment.
_CLICKHOUSE_SERVER = os.environ.get("CLICKHOUSE_URL")


@pytest.fixture(scope="session")
def clickhouse_server_url() -> str:
    """A ClickHouse server that several processes can share, or a skip that says why:
    chDB lets one process own a data directory, so tests of several workers need one."""
    if not _CLICKHOUSE_SERVER:
        pytest.skip(
            "needs CLICKHOUSE_URL (a ClickHouse server two worker processes can share; "
            "chDB allows one process per data directory)"
        )
    return _CLICKHOUSE_SERVER


_NOT_RUN: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without CLICKHOUSE_URL, leave out the store tests' ClickHouse-server runs, and
    count them for the summary."""
    if _CLICKHOUSE_SERVER:
        return
    kept = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store") == "clickhouse-server":
            _NOT_RUN.append(item.nodeid)
        else:
            kept.append(item)
    if _NOT_RUN:
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid in set(_NOT_RUN)])
        items[:] = kept
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: tell the controller
        config.workeroutput["not_run"] = _NOT_RUN


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist's controller: every worker collects the same items and leaves out the
    same ones, which the summary names once."""
    for nodeid in getattr(node, "workeroutput", {}).get("not_run", []):
        if nodeid not in _NOT_RUN:
            _NOT_RUN.append(nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    not_run = len(_NOT_RUN)
    if not_run:
        terminalreporter.write_line(
            f"NOT RUN: {not_run} store and invoice tests on a ClickHouse server "
            "(set CLICKHOUSE_URL=http://user:password@host:8123 to run them); they ran on "
            "the embedded engine (chDB) only",
            yellow=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("meterline")


@pytest.fixture
def settings_factory(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings isolated from the developer's environment, unique names per call."""
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "METERLINE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)

    def make(data_dir: Path, **overrides: Any) -> Settings:
        unique = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "clickhouse_database": f"test_{unique}",
            "events_topic": f"usage.events.{unique}",
            # Its own, too: a worker reads the subscriptions topic from its start, and rows
            # another test published (the demo's sub-000150 on another plan, ended) would
            # change what this one bills (found running the fault tests after the others).
            "subscriptions_topic": f"meterline.subscriptions.{unique}",
            "consumer_group": f"meterline-test-{unique}",
            # The embedded broker rejects InitProducerId (see DESIGN.md).
            "kafka_idempotence": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(params=["chdb", "clickhouse-server"])
def store(
    request: pytest.FixtureRequest,
    settings_factory: Callable[..., Settings],
    shared_data_dir: Path,
) -> Iterator[Stores]:
    """A migrated database of its own, dropped afterwards: in the real chDB engine, and
    again on a ClickHouse server when CLICKHOUSE_URL names one (the same SQL through the
    same client); without it, those runs are left out and the summary says so."""
    overrides = {}
    if request.param == "clickhouse-server":
        overrides["clickhouse_url"] = _CLICKHOUSE_SERVER
    opened = Connection.open(settings_factory(shared_data_dir, **overrides))
    try:
        yield Stores.over(opened)
    finally:
        opened.drop_database()
        opened.close()


@pytest.fixture
def store_environment(
    store: Stores,
    request: pytest.FixtureRequest,
    shared_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Stores:
    """The ``store``, and the environment that points a ``meterline`` command at it."""
    monkeypatch.setenv("METERLINE_DATA_DIR", str(shared_data_dir))
    monkeypatch.setenv("METERLINE_CLICKHOUSE_DATABASE", store.database)
    if request.node.callspec.params.get("store") == "clickhouse-server":
        monkeypatch.setenv("CLICKHOUSE_URL", str(_CLICKHOUSE_SERVER))
    return store
