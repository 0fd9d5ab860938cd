"""The layers of ARCHITECTURE.md hold: import-linter's contracts (pyproject.toml) pass on
the code as it is, and fail on a copy of it with one import the wrong way, so a change
that climbs a layer fails the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every package the contracts name: the copy must hold them all, or import-linter finds
# the installed ones (or none).
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "root_packages"
]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the packages under ``root`` (first on the path, before the
    installed ones), without its cache, which would remember the other tree."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True,
                          check=False)  # fmt: skip


def test_every_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_import_the_wrong_way_breaks_the_build(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    climbing = tmp_path / "rating" / "money.py"  # the lowest stage reaching for invoices
    climbing.write_text(climbing.read_text() + "\nfrom invoicing import ledger  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "rating.money -> invoicing.ledger" in result.stdout
