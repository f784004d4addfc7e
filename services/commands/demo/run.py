"""``fedmedclip demo``: a small federation end to end on this machine, through the real APIs.

It starts an aggregator (SQLite), one hospital node per site (in-process jobs, or a Celery
worker per site when a Redis URL is given) and one inference API as local processes on
loopback ports; generates a synthetic federation; runs rounds over HTTP exactly as admins
and hospital IT would; promotes the final model; classifies class-balanced held-out images
through ``/predict``; and writes a report with a plot and a sentence on what improved.

The weights are random unless a checkpoint is given, so the synthetic data is generated
with a demo preset (see :class:`DemoConfig`): strong class cues, a mild per-hospital camera
shift and a moderate label skew, on which a random-weight ViT's features do separate the
classes and the sites' scores visibly rise over rounds. Every number is measured on images
the measured model never trained on.

Every process it started is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedmedclip.enums import TERMINAL_JOB_STATES, TERMINAL_ROUND_STATES, JobState
from fedmedclip.schemas import RoundCreate, TaskSpec, TrainingHints
from fedmedclip.weights_notice import RANDOM_WEIGHTS_ANNOUNCED_ENV
from services.commands.demo.config import DemoConfig
from services.commands.demo.processes import ProcessGroup, free_port, wait_for
from services.commands.demo.view import (
    MAX_COLUMNS,
    ROUND_METRICS,
    HeldOutResult,
    RoundRecord,
    RoundsView,
    improvement_sentence,
)
from services.common.hub_client import HubAdminClient
from services.hospital_node.api.schemas import JobOut

# Everything the demo prints fits 80 columns, also on a wider terminal.
console = Console(width=min(Console().width, MAX_COLUMNS))


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


MIN_LEFT_PER_CLASS = 4
"""Images of each class a site keeps for its own train / val / test splits."""


def _hold_out(
    site_dir: Path, held_dir: Path, class_names: list[str], per_class: int
) -> list[tuple[Path, str]]:
    """Move the same number of images of every class out of one site's data, before any
    training: a balanced set that no model of the demo ever sees in training.

    Fewer than ``per_class`` each when the site's rarest class cannot spare that many, but
    always the same number per class, so chance level is exactly 1 / classes.
    """
    folders = {name: sorted((site_dir / name).glob("*.png")) for name in class_names}
    n = min(per_class, *(len(images) - MIN_LEFT_PER_CLASS for images in folders.values()))
    if n < 1:
        raise RuntimeError(f"{site_dir.name} lacks a class; cannot hold out a balanced set")
    held: list[tuple[Path, str]] = []
    for name, images in folders.items():
        (held_dir / name).mkdir(parents=True, exist_ok=True)
        for image in images[:n]:
            target = held_dir / name / image.name
            shutil.move(image, target)
            held.append((target, name))
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
            alpha=config.alpha,
            domain_shift=config.domain_shift,
            class_cue=config.class_cue,
            image_size=96,
        )
    class_names = json.loads((data_dir / "classes.json").read_text())
    if isinstance(class_names, dict):
        class_names = class_names["classes"]
    held_out = _hold_out(
        data_dir / "hospital_0", out / "held_out", class_names, config.held_out_per_class
    )
    console.print(
        f"synthetic data: {config.hospitals} hospitals, classes {', '.join(class_names)}; "
        f"{len(held_out)} class-balanced images of hospital_0 held out for /predict"
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
    agg_port = free_port()
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
    wait_for("the aggregator", admin.healthy, group, 60)
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
        port = free_port()
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
        wait_for(
            f"{site['name']} node", lambda s=site: s["client"].get("/health").is_success, group, 60
        )
        report = _ok(
            site["client"].post(
                "/api/v1/datasets",
                json={"path": str(out / "data" / site["name"]), "name": "synthetic"},
            )
        ).json()
        console.print(f"{site['name']}: registered {report['n_images']} images")

    with RoundsView(console, len(sites)) as view:
        for round_index in range(config.rounds):
            view.add(_run_round(config, admin, sites, group, round_index, view))
    records = view.records
    console.print(improvement_sentence(records))

    final = records[-1].version
    if final is None:
        raise RuntimeError("the last round did not publish a model")
    admin.promote(final)
    console.print(f"promoted global model version {final} to production")

    predictions = _predict(out, sites[0], hub, clinician, held_out, final, group)
    report = _write_report(out, config, records, predictions, weights_note, class_names)
    for line in HeldOutResult(
        class_names, [p["truth"] for p in predictions], [p["label"] for p in predictions]
    ).lines():
        console.print(line, highlight=False)
    return report


def _run_round(
    config: DemoConfig,
    admin: HubAdminClient,
    sites: list[dict],
    group: ProcessGroup,
    index: int,
    view: RoundsView,
) -> RoundRecord:
    started = time.monotonic()
    opened = admin.open_round(
        RoundCreate(
            min_clients=len(sites),
            deadline_seconds=1800,
            base_version="latest",  # rounds chain; only the final model is promoted
            hints=TrainingHints(local_epochs=config.local_epochs, lr=config.lr),
            secure_aggregation=config.secure_aggregation,
        )
    )
    jobs = {
        s["name"]: _job(s["client"].post("/api/v1/jobs", json={"round_id": opened.id})).id
        for s in sites
    }
    # Drawn inside the rounds view (below the table), never on its own.
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )
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
                else f"epoch {job.progress.epoch} loss {job.progress.loss:.3f}"
            )
            progress.update(bars[site["name"]], completed=job.progress.percent, info=info)
            if job.state in TERMINAL_JOB_STATES:
                finished[site["name"]] = job
        view.progress(progress)
        time.sleep(0.3)
    failed = {n: j.error for n, j in finished.items() if j.state == JobState.failed}
    if failed:
        raise RuntimeError(f"training failed: {failed}")
    if not config.secure_aggregation:
        # Every site has sent its update: aggregate now rather than wait for the deadline.
        # (A secure round publishes by itself once every site has answered the unmasking.)
        admin.close_round(opened.id)
    closed = wait_for(
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
        site_metrics={
            n: {
                key: (j.metrics or {})[f"test_{key}"]
                for key, _ in ROUND_METRICS
                if f"test_{key}" in (j.metrics or {})
            }
            for n, j in finished.items()
        },
        bytes_sent={n: j.update_bytes or 0 for n, j in finished.items()},
    )


def _predict(
    out: Path,
    site: dict,
    hub: str,
    clinician: str,
    held_out: list[tuple[Path, str]],
    final: int,
    group: ProcessGroup,
) -> list[dict]:
    port = free_port()
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
    wait_for(
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
    return results


def _write_report(
    out: Path,
    config: DemoConfig,
    records: list[RoundRecord],
    predictions: list[dict],
    weights_note: str,
    class_names: list[str],
) -> dict:
    held = HeldOutResult(
        class_names, [p["truth"] for p in predictions], [p["label"] for p in predictions]
    )
    improvement = improvement_sentence(records)
    _plot(out / "report.png", records, weights_note)
    report = {
        "config": {k: str(v) for k, v in vars(config).items()},
        "weights": weights_note,
        "classes": class_names,
        "rounds": [vars(r) | {"mean": {k: r.mean(k) for k, _ in ROUND_METRICS}} for r in records],
        "improvement": improvement,
        "predictions": predictions,
        "predict_accuracy": held.accuracy,
        "predict_balanced_accuracy": held.balanced_accuracy,
        "predict_chance": held.chance,
        "predict_confusion": held.confusion(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [
        "# FedMedCLIP demo report",
        "",
        f"> {weights_note}",
        "",
        f"{config.hospitals} hospitals, {config.rounds} rounds, backbone {config.backbone}"
        + (
            "; secure aggregation: the hub saw only masked updates and their sum."
            if config.secure_aggregation
            else "."
        ),
        "Scores are means over sites, each on its own test split (never trained on).",
        "",
        "| round | accuracy | balanced accuracy | macro-F1 | KB sent per site | version "
        "| seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        scores = " | ".join(f"{r.mean(k):.3f}" for k, _ in ROUND_METRICS)
        lines.append(
            f"| {r.round_id} | {scores} | {r.kb_per_site:.0f} | {r.version} | {r.seconds:.1f} |"
        )
    lines += ["", improvement, "", "```", *held.lines(), "```", "", "![rounds](report.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return report


def _plot(path: Path, records: list[RoundRecord], weights_note: str) -> None:
    """Mean scores over rounds (left) and the update size each site sent (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    rounds = [r.round_id for r in records]
    for key, words in ROUND_METRICS:
        ax1.plot(rounds, [r.mean(key) for r in records], marker="o", label=words)
    ax1.set(xlabel="round", ylabel="mean over sites (test split)", title="Scores", ylim=(0, 1))
    ax1.set_xticks(rounds)
    ax1.legend()
    ax2.bar([str(r) for r in rounds], [r.kb_per_site for r in records])
    ax2.set(xlabel="round", ylabel="KB per site", title="FAM update size sent per site")
    fig.suptitle("FedMedCLIP demo" + (" (random CLIP weights)" if "RANDOM" in weights_note else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
