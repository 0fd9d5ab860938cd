"""Numbered SQL migrations (``migrations/NNNN_name.sql``), applied in order, each once."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from typing import Any

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def available() -> list[Migration]:
    folder = importlib.resources.files("base") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(int(match[1]), match[2], _statements(entry.read_text(encoding="utf-8")))
            )
    return sorted(found, key=lambda migration: migration.version)


def _statements(sql: str) -> tuple[str, ...]:
    without_comments = "\n".join(
        line for line in sql.splitlines() if not line.lstrip().startswith("--")
    )
    return tuple(part.strip() for part in without_comments.split(";") if part.strip())


def _ensure_ledger(client: Any, database: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )


def applied_versions(client: Any, database: str) -> set[int]:
    _ensure_ledger(client, database)
    rows = client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    return {int(row[0]) for row in rows}


def pending(client: Any, database: str) -> list[Migration]:
    done = applied_versions(client, database)
    return [migration for migration in available() if migration.version not in done]


def migrate(client: Any, database: str) -> list[Migration]:
    """Apply what is pending and return it; running it again applies nothing."""
    applied = []
    for migration in pending(client, database):
        for statement in migration.statements:
            client.command(statement.replace("{db}", database))
        client.insert(
            f"{database}.schema_migrations",
            [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        applied.append(migration)
    return applied
