"""Who holds an aggregation lease, and whether that process is known to be dead.

A claim records its owner as ``host/pid/boot-id/start-time``. After a crash the restarted
hub usually runs on the same host (the same machine, or the same pod after a container
restart): if the owner names this host and this boot, and no process with that pid and
start time exists any more, the aggregation it began can be taken over at once instead of
after the lease. The start time matters because pids are reused (a restarted container's
hub is pid 1 again). A lease owned by another host, or by a live process, is left alone:
only its expiry or an admin's ``recover`` ends it.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
UNKNOWN = "?"


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    boot_id: str
    started: str

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.boot_id}/{self.started}"


@functools.cache
def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip() or UNKNOWN
    except OSError:
        return UNKNOWN


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None when no such process exists)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): existence is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return UNKNOWN
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name may contain spaces


def current() -> ProcessIdentity:
    """This process."""
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), pid, _boot_id(), _start_time(pid) or UNKNOWN)


def parse(owner: str | None) -> ProcessIdentity | None:
    """The identity recorded in a lease, or None for a missing or foreign format."""
    parts = (owner or "").rsplit("/", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return ProcessIdentity(parts[0], int(parts[1]), parts[2], parts[3])


def is_dead_here(owner: str | None) -> bool:
    """True when ``owner`` was a process of this host and boot that no longer runs."""
    identity, me = parse(owner), current()
    if identity is None or (identity.host, identity.boot_id) != (me.host, me.boot_id):
        return False
    if identity.pid == me.pid and identity.started == me.started:
        return False
    started = _start_time(identity.pid)
    return started is None or started not in (identity.started, UNKNOWN)
