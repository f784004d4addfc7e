"""Real PostgreSQL, Redis and HTTP servers for tests, on loopback ports, and subprocesses
(a node's Celery worker) that a test may stop or SIGKILL.

When ``.ci/run`` has already started PostgreSQL or Redis it exports
``FEDMEDCLIP_TEST_POSTGRES_URL`` / ``FEDMEDCLIP_TEST_REDIS_URL`` and these are used;
otherwise the fixtures start private instances and stop them at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from services.common.serving import ServerLimits, ServerTls

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("FEDMEDCLIP_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _as_postgres(*args: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *args], check=True, capture_output=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields an admin URL (database ``postgres``)."""
    if url := os.environ.get("FEDMEDCLIP_TEST_POSTGRES_URL"):
        yield url
        return
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}")
    tmp = Path(tempfile.mkdtemp(prefix="fmc-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data = tmp / "data"
    port = free_port()
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    _as_postgres(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(tmp / "log"),
        "-w",
        "-o",
        f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """Create database ``name`` and return its URL."""
    import psycopg

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis without persistence; yields its URL."""
    if url := os.environ.get("FEDMEDCLIP_TEST_REDIS_URL"):
        yield url
        return
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class ThreadedServer:
    """Runs an ASGI app with uvicorn in a background thread on a free loopback port."""

    def __init__(
        self,
        app,
        port: int | None = None,
        *,
        limits: ServerLimits | None = None,
        tls: ServerTls | None = None,
        log_level: str = "warning",
    ) -> None:
        self.port = port or free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        # Served as `fedmedclip ... serve` serves it: the same protocol, timeouts and caps.
        options = (limits or ServerLimits()).uvicorn_options()
        if tls is not None:
            options |= tls.uvicorn_options()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level=log_level, **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def service_command(package: str, *args: str) -> list[str]:
    """The Typer app of ``services.<package>.cli`` with ``args``, run by this interpreter
    (no installed ``fedmedclip`` script needed)."""
    return [sys.executable, "-c", f"from services.{package}.cli import app; app()", *args]


def hub_env(data_dir: Path, admin_token: str, **extra: str) -> dict[str, str]:
    """The environment of a ``fedmedclip aggregator serve`` process on SQLite in ``data_dir``."""
    env = os.environ | {
        "FEDMEDCLIP_AGG_DATA_DIR": str(data_dir),
        "FEDMEDCLIP_AGG_ADMIN_TOKEN": admin_token,
        **extra,
    }
    env.pop("FEDMEDCLIP_AGG_DATABASE_URL", None)
    return env


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


class WorkerProcess(ManagedProcess):
    """``fedmedclip node worker``: a Celery worker subprocess that a test may SIGKILL."""

    # A worker still in a task would finish it first on SIGTERM: kill it after 5 s.
    stop_grace_seconds = 5.0

    def __init__(self, settings: Any, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                service_command("hospital_node", "worker"),
                env=os.environ | settings.environment(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
