"""A Faust worker in its own process, started and stopped by PID.

A separate process is what a crash looks like in production, and with chDB the
process that opens a data directory owns it until it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import AliasChoices, SecretStr

from base.processes import cpu_seconds, die_with_parent
from base.settings import Settings


def settings_env(settings: Settings, bootstrap_servers: str) -> dict[str, str]:
    """The environment that makes a child process see exactly these settings: every field,
    each under the variable Settings reads first for it, the ClickHouse URL included."""
    env = dict(os.environ)
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = (
            str(alias.choices[0])
            if isinstance(alias, AliasChoices)
            else f"METERLINE_{name.upper()}"
        )
        value = getattr(settings, name)
        if value is None:
            env.pop(variable, None)
        elif isinstance(value, SecretStr):
            env[variable] = value.get_secret_value()
        elif isinstance(value, Path):
            env[variable] = str(value.resolve())
        else:
            env[variable] = str(value)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, bootstrap_servers: str, log_path: Path) -> None:
        self._env = settings_env(settings, bootstrap_servers)
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "meterline", "worker"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (it only calls prctl)
                # A group of its own: a terminal's Ctrl-C reaches the group in front, and the
                # process that started this one stops it in order (a worker after its drain).
                process_group=0,
            )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def cpu_seconds(self) -> float:
        """CPU time the worker has used so far (``base.processes.cpu_seconds``)."""
        return cpu_seconds(self._process.pid) if self._process else 0.0

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM); SIGKILL if it does not exit in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL: what a crash looks like."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        return process.wait(timeout=30)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
