"""Helpers of the reliability suite: hubs in a thread or a subprocess, Redis that can crash.

Everything listens on loopback ports chosen at random; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from fedmedclip.schemas import TaskSpec
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from tests.integration.aggregator.support import ADMIN_TOKEN, TASK, Hub
from tests.support.processes import ThreadedServer, free_port, http_ok, wait_for_port, wait_until

REPO = Path(__file__).resolve().parents[2]


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


class ManagedProcess:
    """A subprocess a test may SIGKILL, or stop with a grace period before the kill."""

    proc: subprocess.Popen[bytes] | None = None
    stop_grace_seconds: float = 30.0

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, open transactions are simply cut off."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                self.kill()


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
        env = os.environ | {
            "FEDMEDCLIP_AGG_DATA_DIR": str(self.data_dir),
            "FEDMEDCLIP_AGG_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        env.pop("FEDMEDCLIP_AGG_DATABASE_URL", None)
        command = [
            sys.executable,
            "-c",
            "from services.aggregator.cli import app; app()",
            "serve",
            "--port",
            str(self.port),
        ]
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


class WorkerProcess(ManagedProcess):
    """``fedmedclip node worker``: a Celery worker subprocess that a test may SIGKILL."""

    # A worker still in a task would finish it first on SIGTERM: kill it after 5 s.
    stop_grace_seconds = 5.0

    def __init__(self, settings: Any, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from services.hospital_node.cli import app; app()"]
                + ["worker"],
                env=os.environ | settings.environment(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
