"""``fedmedclip demo``: a small federation end to end on this machine, through the real APIs.

It starts an aggregator (SQLite), one hospital node per site (in-process jobs, or a Celery
worker per site when a Redis URL is given) and one inference API as local processes on
loopback ports; generates a synthetic federation; runs rounds over HTTP exactly as admins
and hospital IT would; promotes the final model; classifies held-out images through
``/predict``; and writes a report with a plot. Every process it started is stopped on exit,
also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedmedclip.enums import TERMINAL_JOB_STATES, TERMINAL_ROUND_STATES, JobState, RoundState
from fedmedclip.schemas import RoundCreate, TaskSpec, TrainingHints
from fedmedclip.weights_notice import RANDOM_WEIGHTS_ANNOUNCED_ENV
from services.common.hub_client import HubAdminClient, HubError
from services.hospital_node.api.schemas import JobOut

console = Console()
_T = TypeVar("_T")

HELD_OUT_PER_CLASS = 5


@dataclass
class DemoConfig:
    """Options of one demo run."""

    rounds: int = 3
    hospitals: int = 3
    classes: int = 4
    per_hospital: int = 80
    local_epochs: int = 3
    backbone: str = "ViT-S-32"
    pretrained: str = "none"
    out: Path = Path("demo-out")
    redis_url: str = ""
    seed: int = 0


@dataclass
class RoundRecord:
    """What one round produced, for the table and the report."""

    round_id: int
    version: int | None
    state: RoundState
    seconds: float
    site_accuracy: dict[str, float] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)


def _free_port() -> int:
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


def _wait(what: str, predicate: Callable[[], _T | None], group: ProcessGroup, timeout: float) -> _T:
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


def _ok(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: "
            f"{response.status_code} {response.text}"
        )
    return response


def _job(response: httpx.Response) -> JobOut:
    """A node's answer about one job, typed."""
    return JobOut.model_validate_json(_ok(response).content)


def _hold_out(site_dir: Path, held_dir: Path, per_class: int) -> list[tuple[Path, str]]:
    """Move a few images per class of one site out of its training data."""
    held: list[tuple[Path, str]] = []
    for class_dir in sorted(p for p in site_dir.iterdir() if p.is_dir()):
        images = sorted(class_dir.iterdir())
        if len(images) <= per_class + 2:
            continue
        (held_dir / class_dir.name).mkdir(parents=True, exist_ok=True)
        for image in images[:per_class]:
            target = held_dir / class_dir.name / image.name
            shutil.move(image, target)
            held.append((target, class_dir.name))
    return held


def run_demo(**options: Any) -> dict:
    """Run the whole demo with :class:`DemoConfig` ``options``; returns the report dictionary
    (also written to ``out``)."""
    config = DemoConfig(**options)
    from fedmedclip.data.synth import synthesize_federation

    out = config.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    weights_note = (
        "CLIP weights are RANDOM (no checkpoint given): accuracy shows the platform working, "
        "not clinical quality."
        if config.pretrained.lower() in ("", "none", "random")
        else f"CLIP weights: {config.pretrained}"
    )
    console.rule("[bold]FedMedCLIP demo")
    console.print(f"[yellow]{weights_note}")
    data_dir = out / "data"
    with console.status("generating a synthetic federation"):
        synthesize_federation(
            data_dir,
            hospitals=config.hospitals,
            classes=config.classes,
            per_hospital=config.per_hospital,
            seed=config.seed,
            image_size=96,
        )
    class_names = json.loads((data_dir / "classes.json").read_text())
    if isinstance(class_names, dict):
        class_names = class_names["classes"]
    held_out = _hold_out(data_dir / "hospital_0", out / "held_out", HELD_OUT_PER_CLASS)
    console.print(
        f"synthetic data: {config.hospitals} hospitals, classes {class_names}, "
        f"{len(held_out)} held-out images of hospital_0 for /predict"
    )

    # The header says which weights are used, so the children need not warn again.
    group = ProcessGroup(out / "logs", {RANDOM_WEIGHTS_ANNOUNCED_ENV: "1"})
    with ExitStack() as stack:
        stack.callback(group.stop)
        report = _run_federation(config, out, class_names, held_out, group, weights_note)
    console.print(f"[green]report: {out / 'report.md'} and {out / 'report.png'}")
    return report


def _run_federation(
    config: DemoConfig,
    out: Path,
    class_names: list[str],
    held_out: list[tuple[Path, str]],
    group: ProcessGroup,
    weights_note: str,
) -> dict:
    admin_token = secrets.token_urlsafe(16)
    site_admin = secrets.token_urlsafe(16)
    clinician = secrets.token_urlsafe(16)
    agg_port = _free_port()
    hub = f"http://127.0.0.1:{agg_port}"
    group.start(
        "aggregator",
        ["aggregator", "serve", "--host", "127.0.0.1", "--port", str(agg_port)],
        {
            "FEDMEDCLIP_AGG_DATA_DIR": str(out / "aggregator"),
            "FEDMEDCLIP_AGG_ADMIN_TOKEN": admin_token,
        },
    )
    admin = HubAdminClient(hub, admin_token, timeout_seconds=60)
    _wait("the aggregator", admin.healthy, group, 60)
    admin.set_task(
        TaskSpec(
            class_names=class_names,
            prompt_template="a dermoscopy picture of a {}.",
            backbone=config.backbone,
            weights_id=config.pretrained,
        )
    )

    sites: list[dict] = []
    for i in range(config.hospitals):
        name = f"hospital_{i}"
        node = admin.add_node(name)
        port = _free_port()
        site_dir = out / "sites" / name
        env = {
            "FEDMEDCLIP_NODE_AGGREGATOR_URL": hub,
            "FEDMEDCLIP_NODE_NODE_TOKEN": node.token,
            "FEDMEDCLIP_NODE_ADMIN_TOKEN": site_admin,
            "FEDMEDCLIP_NODE_DATA_ROOTS": str(out / "data"),
            "FEDMEDCLIP_NODE_DATA_DIR": str(site_dir),
            "FEDMEDCLIP_NODE_MODEL_STORE_DIR": str(site_dir / "model_store"),
            "FEDMEDCLIP_NODE_BACKBONE_WEIGHTS": config.pretrained,
            "FEDMEDCLIP_NODE_DEVICE": "cpu",
        }
        if config.redis_url:
            # One Redis database per site, so the sites' queues never mix.
            broker = urlsplit(config.redis_url)._replace(path=f"/{i + 1}")
            env["FEDMEDCLIP_NODE_BROKER_URL"] = urlunsplit(broker)
            group.start(f"{name}-worker", ["node", "worker"], env)
        group.start(
            f"{name}-node", ["node", "serve", "--host", "127.0.0.1", "--port", str(port)], env
        )
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=60,
            headers={"Authorization": f"Bearer {site_admin}"},
        )
        sites.append(
            {
                "name": name,
                "client": client,
                "token": node.token,
                "store": site_dir / "model_store",
            }
        )
    for site in sites:
        _wait(
            f"{site['name']} node", lambda s=site: s["client"].get("/health").is_success, group, 60
        )
        report = _ok(
            site["client"].post(
                "/api/v1/datasets",
                json={"path": str(out / "data" / site["name"]), "name": "synthetic"},
            )
        ).json()
        console.print(f"{site['name']}: registered {report['n_images']} images")

    records: list[RoundRecord] = []
    for round_index in range(config.rounds):
        records.append(_run_round(config, admin, sites, group, round_index))
        _print_table(records, [s["name"] for s in sites])

    final = records[-1].version
    if final is None:
        raise RuntimeError("the last round did not publish a model")
    admin.promote(final)
    console.print(f"promoted global model version {final} to production")

    predictions = _predict(out, sites[0], hub, clinician, held_out, final, group)
    report = _write_report(out, config, records, predictions, weights_note, class_names)
    return report


def _run_round(
    config: DemoConfig, admin: HubAdminClient, sites: list[dict], group: ProcessGroup, index: int
) -> RoundRecord:
    started = time.monotonic()
    opened = admin.open_round(
        RoundCreate(
            min_clients=len(sites),
            deadline_seconds=1800,
            base_version="latest",  # rounds chain; only the final model is promoted
            hints=TrainingHints(local_epochs=config.local_epochs, lr=2e-3),
        )
    )
    jobs = {
        s["name"]: _job(s["client"].post("/api/v1/jobs", json={"round_id": opened.id})).id
        for s in sites
    }
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bars = {
            s["name"]: progress.add_task(
                f"round {index + 1} {s['name']}", total=100, info=JobState.queued.value
            )
            for s in sites
        }
        finished: dict[str, JobOut] = {}
        while len(finished) < len(sites):
            group.check_alive()
            for site in sites:
                if site["name"] in finished:
                    continue
                job = _job(site["client"].get(f"/api/v1/jobs/{jobs[site['name']]}"))
                info = (
                    job.state.value
                    if job.progress.loss is None
                    else f"{job.state} epoch {job.progress.epoch} loss {job.progress.loss:.3f}"
                )
                progress.update(bars[site["name"]], completed=job.progress.percent, info=info)
                if job.state in TERMINAL_JOB_STATES:
                    finished[site["name"]] = job
            time.sleep(0.3)
    failed = {n: j.error for n, j in finished.items() if j.state == JobState.failed}
    if failed:
        raise RuntimeError(f"training failed: {failed}")
    # Every site has sent its update: aggregate now rather than wait for the deadline.
    admin.close_round(opened.id)
    closed = _wait(
        "the round to be published",
        lambda: r if (r := admin.get_round(opened.id)).state in TERMINAL_ROUND_STATES else None,
        group,
        120,
    )
    return RoundRecord(
        round_id=closed.id,
        version=closed.result_version,
        state=closed.state,
        seconds=time.monotonic() - started,
        site_accuracy={
            n: (j.metrics or {}).get("test_accuracy", float("nan")) for n, j in finished.items()
        },
        bytes_sent={n: j.update_bytes or 0 for n, j in finished.items()},
    )


def _print_table(records: list[RoundRecord], names: list[str]) -> None:
    table = Table(title="Rounds (test accuracy per site, on each site's held-out split)")
    table.add_column("round")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("mean", justify="right")
    table.add_column("KB sent/site", justify="right")
    table.add_column("version", justify="right")
    table.add_column("seconds", justify="right")
    for r in records:
        accs = [r.site_accuracy.get(n, float("nan")) for n in names]
        kb = sum(r.bytes_sent.values()) / max(len(r.bytes_sent), 1) / 1024
        table.add_row(
            str(r.round_id),
            *(f"{a:.3f}" for a in accs),
            f"{sum(accs) / len(accs):.3f}",
            f"{kb:.0f}",
            str(r.version),
            f"{r.seconds:.1f}",
        )
    console.print(table)


def _predict(
    out: Path,
    site: dict,
    hub: str,
    clinician: str,
    held_out: list[tuple[Path, str]],
    final: int,
    group: ProcessGroup,
) -> list[dict]:
    port = _free_port()
    group.start(
        "inference",
        ["inference", "serve", "--host", "127.0.0.1", "--port", str(port)],
        {
            "FEDMEDCLIP_INFERENCE_MODEL_STORE_DIR": str(site["store"]),
            "FEDMEDCLIP_INFERENCE_AGGREGATOR_URL": hub,
            "FEDMEDCLIP_INFERENCE_NODE_TOKEN": site["token"],
            "FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS": clinician,
            "FEDMEDCLIP_INFERENCE_RELOAD_SECONDS": "1",
            "FEDMEDCLIP_INFERENCE_DEVICE": "cpu",
        },
    )
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=60,
        headers={"Authorization": f"Bearer {clinician}"},
    )
    _wait(
        "the inference API to serve the production model",
        lambda: (
            api.get("/ready").is_success and api.get("/model").json().get("global_version") == final
        ),
        group,
        180,
    )
    results = []
    for path, truth in held_out:
        with path.open("rb") as fh:
            answer = _ok(api.post("/predict", files={"file": (path.name, fh, "image/png")})).json()
        results.append(
            {
                "file": path.name,
                "truth": truth,
                "label": answer["label"],
                "alpha": answer["alpha"],
                "model": answer["model"],
                "latency_ms": answer["latency_ms"],
            }
        )
    correct = sum(r["label"] == r["truth"] for r in results)
    console.print(
        f"/predict on {len(results)} held-out images of {site['name']}: "
        f"{correct} correct ({correct / max(len(results), 1):.0%}), "
        f"model {results[0]['model'] if results else '-'}"
    )
    return results


def _write_report(
    out: Path,
    config: DemoConfig,
    records: list[RoundRecord],
    predictions: list[dict],
    weights_note: str,
    class_names: list[str],
) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(records[0].site_accuracy)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    rounds = [r.round_id for r in records]
    for name in names:
        ax1.plot(rounds, [r.site_accuracy[name] for r in records], marker="o", label=name)
    ax1.set(xlabel="round", ylabel="test accuracy", title="Accuracy per site", ylim=(0, 1))
    ax1.legend()
    ax2.bar(
        [str(r) for r in rounds],
        [sum(r.bytes_sent.values()) / len(r.bytes_sent) / 1024 for r in records],
    )
    ax2.set(xlabel="round", ylabel="KB per site", title="FAM update size sent per site")
    fig.suptitle("FedMedCLIP demo" + (" (random CLIP weights)" if "RANDOM" in weights_note else ""))
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=100)
    plt.close(fig)
    correct = sum(p["label"] == p["truth"] for p in predictions)
    report = {
        "config": {k: str(v) for k, v in vars(config).items()},
        "weights": weights_note,
        "classes": class_names,
        "rounds": [vars(r) for r in records],
        "predictions": predictions,
        "predict_accuracy": correct / max(len(predictions), 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [
        "# FedMedCLIP demo report",
        "",
        f"> {weights_note}",
        "",
        f"{config.hospitals} hospitals, {config.rounds} rounds, backbone {config.backbone}.",
        "",
        "| round | " + " | ".join(names) + " | KB sent per site | version | seconds |",
        "|---" * (len(names) + 4) + "|",
    ]
    for r in records:
        kb = sum(r.bytes_sent.values()) / len(r.bytes_sent) / 1024
        lines.append(
            f"| {r.round_id} | "
            + " | ".join(f"{r.site_accuracy[n]:.3f}" for n in names)
            + f" | {kb:.0f} | {r.version} | {r.seconds:.1f} |"
        )
    lines += [
        "",
        f"/predict on {len(predictions)} held-out images: {correct} correct "
        f"({report['predict_accuracy']:.0%}).",
        "",
        "![rounds](report.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return report
