"""One process tree: children that die with their parent, and who holds what is in use.

A process meterline starts (the embedded broker, a worker) asks the kernel for SIGKILL
when the thread that started it dies, so a SIGKILL of ``meterline serve`` (an OOM kill)
leaves nothing behind to hold ports and the chDB directory. When something is held all
the same (a process from before this rule, or one started by hand), ``holder`` names it,
so the user gets a line with a PID to stop instead of a crash loop.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
from pathlib import Path
from typing import ClassVar

_PR_SET_PDEATHSIG = 1

# A worker that exits with this cannot open its store because another process holds it:
# restarting it cannot help, so its supervisor says so and stops (EX_CANTCREAT).
EXIT_STORE_IN_USE = 73


def die_with_parent() -> None:
    """For ``subprocess.Popen(preexec_fn=...)``: SIGKILL this child when its parent dies.
    Linux only; elsewhere a no-op (children then outlive a killed parent)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


def describe(pid: int) -> str:
    """'PID (its command line)', as far as /proc tells."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return str(pid)
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"{pid} ({command[:120]})" if command else str(pid)


def port_holder(port: int) -> int | None:
    """The PID of a process listening on TCP ``port`` on this machine, if /proc shows one."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    return _owner_of(inodes) if inodes else None


def _owner_of(links: set[str]) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for descriptor in (entry / "fd").iterdir():
                if os.readlink(descriptor) in links:
                    return int(entry.name)
        except OSError:
            continue
    return None


class DirectoryLock:
    """An exclusive lock on a directory, held from ``take`` to the matching ``release`` (a
    POSIX lock on a file in it, which the kernel also drops however the process ends).
    The holder's PID is written in the file, for whoever finds it taken. Several takes
    in one process share the lock; it goes with the last release."""

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}  # directory -> (descriptor, takes)

    @classmethod
    def take(cls, directory: Path) -> int | None:
        """None once this process holds the lock; else the PID of the process that does."""
        directory = directory.resolve()
        if directory in cls._held:
            descriptor, takes = cls._held[directory]
            cls._held[directory] = (descriptor, takes + 1)
            return None
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory / "owner.pid", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held_by = os.read(descriptor, 32).decode(errors="replace").strip()
            os.close(descriptor)
            return int(held_by) if held_by.isdigit() else -1
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        cls._held[directory] = (descriptor, 1)
        return None

    @classmethod
    def release(cls, directory: Path) -> None:
        directory = directory.resolve()
        descriptor, takes = cls._held.pop(directory, (-1, 0))
        if takes > 1:
            cls._held[directory] = (descriptor, takes - 1)
        elif descriptor >= 0:
            os.close(descriptor)  # drops the lock


def cpu_seconds(pid: int) -> float:
    """CPU time a process and its live descendants have used so far, every thread counted
    (an embedded engine's included): on a shared machine the figure that stays put while
    throughput swings. 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The fields after the command name, which may itself hold spaces and ")":
            # utime and stime, the 14th and 15th of the line, in clock ticks.
            fields = stat.read().rsplit(")", 1)[1].split()
        children: set[int] = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.update(int(child) for child in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in children)
