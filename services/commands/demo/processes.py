"""The demo's child processes: started together, stopped together, waited on while alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from services.common.hub_client import HubError

_T = TypeVar("_T")


def free_port() -> int:
    """A loopback port that was free a moment ago, for a child to listen on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessGroup:
    """Child processes that are always stopped together (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = env or {}  # given to every child, under its own ``env``
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env={**os.environ, **self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children ourselves
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.log_dir / name}.log"
                )


def wait_for(
    what: str, predicate: Callable[[], _T | None], group: ProcessGroup, timeout: float
) -> _T:
    """The first truthy answer of ``predicate`` within ``timeout`` seconds; a child that
    exits meanwhile ends the wait at once, and a call that fails over HTTP counts as no."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group.check_alive()
        try:
            if value := predicate():
                return value
        except (httpx.HTTPError, HubError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")
