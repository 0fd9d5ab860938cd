"""Run a ``meterline`` command that kills itself with SIGKILL right after a given call
returns: ``python -m tests.faults.kill_after MODULE:ATTRIBUTE N ARGS...`` patches the
function or method (``Class.method``) so that its N-th call ends the process, the way a
crash would, between two writes. For the fault tests; never imported by meterline."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import Any


def _patch(target: str, calls: int) -> None:
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    seen = 0

    @functools.wraps(original)
    def killing(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        result = original(*args, **kwargs)
        seen += 1
        if seen == calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, killing)


def main() -> None:
    target, calls, *args = sys.argv[1:]
    _patch(target, int(calls))
    from meterline.cli import main as meterline  # noqa: PLC0415 (after the patch: its targets import early)

    meterline(args)


if __name__ == "__main__":
    main()
