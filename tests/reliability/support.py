"""Helpers of the reliability suite: hubs in a thread or a subprocess, Redis that can crash.

Everything listens on loopback ports chosen at random; every wait is bounded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from fedmedclip.schemas import TaskSpec
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from tests.support.hub import ADMIN_TOKEN, TASK, Hub
from tests.support.processes import (
    REPO,
    ManagedProcess,
    ThreadedServer,
    free_port,
    http_ok,
    hub_env,
    service_command,
    wait_for_port,
    wait_until,
)


def hub_settings(data_dir: Path, **overrides: Any) -> AggregatorSettings:
    """A SQLite hub in ``data_dir`` with the suite's admin token."""
    return AggregatorSettings(data_dir=data_dir, admin_token=ADMIN_TOKEN, **overrides)


@contextmanager
def threaded_hub(
    data_dir: Path, task: TaskSpec = TASK, **overrides: Any
) -> Iterator[tuple[ThreadedServer, Hub]]:
    """The real aggregator app under uvicorn in a thread, with ``task`` set."""
    with (
        ThreadedServer(create_app(hub_settings(data_dir, **overrides))) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        hub = Hub(http)
        assert hub.set_task(task).status_code == 200
        yield server, hub


class HubProcess(ManagedProcess):
    """``fedmedclip aggregator serve`` as a subprocess that can be SIGKILLed and restarted."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = hub_env(self.data_dir, ADMIN_TOKEN)
        command = service_command("aggregator", "serve", "--port", str(self.port))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        wait_until(lambda: self._alive_and_ready(), timeout=120, what="aggregator subprocess ready")

    def _alive_and_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"aggregator exited with {self.proc.returncode}:\n{self.log()}")
        return http_ok(f"{self.url}/ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class RedisProcess(ManagedProcess):
    """A private redis-server on a fixed port that a test may crash and start again."""

    def __init__(self, workdir: Path, *, appendonly: bool) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.workdir)]
        if self.appendonly:  # what the site chart runs: every write on disk before the reply
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:  # a Redis that comes back empty (a pod moved to another host)
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=30)
