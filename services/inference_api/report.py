"""``fedmedclip inference report``: the site monitoring (``GET /monitoring``) as HTML + PNG.

The report is drawn from the monitoring JSON only (fetched from the running service or read
from a file), so it can be made by an operator without access to images or models.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

PANELS = ("classes", "confidence", "entropy", "alpha")


def _bars(ax: Any, histogram: dict[str, Any], title: str) -> None:
    edges, counts = histogram["edges"], histogram["counts"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="black")
    ax.set_title(title)


def _classes(ax: Any, version: dict[str, Any]) -> None:
    names = version["class_names"]
    prior = version["class_prior"]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], prior["predicted"], width=0.4, label="predicted")
    if prior["training"] is not None:
        ax.bar([x + 0.2 for x in xs], prior["training"], width=0.4, label="training prior")
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_title("classes")
    ax.legend(fontsize="small")


def write_png(monitoring: dict[str, Any], path: Path) -> None:
    versions = [v for v in monitoring["versions"] if v.get("predictions")]
    rows = max(1, len(versions))
    fig, axes = plt.subplots(rows, len(PANELS), figsize=(4 * len(PANELS), 3 * rows), squeeze=False)
    for row, version in zip(axes, versions, strict=False):
        _classes(row[0], version)
        for ax, name in zip(row[1:], PANELS[1:], strict=True):
            _bars(ax, version["histograms"][name], name)
        row[0].set_ylabel(f"g{version['global_version']} h{version['head_version']}")
    if not versions:
        axes[0][0].set_title("no predictions since the service started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("-" if value is None else str(value))


def write_html(monitoring: dict[str, Any], path: Path, png_name: str) -> None:
    rows = []
    for v in monitoring["versions"]:
        drift = v.get("drift", {})
        feedback = v.get("feedback", {})
        prior = v.get("class_prior", {})
        cells = [
            v["global_version"],
            v["head_version"],
            v.get("predictions", 0),
            drift.get("state"),
            drift.get("mmd"),
            drift.get("threshold"),
            prior.get("total_variation"),
            feedback.get("labelled", 0),
            feedback.get("accuracy"),
            feedback.get("balanced_accuracy"),
            feedback.get("ece"),
        ]
        rows.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
    head = (
        "global",
        "head",
        "predictions",
        "drift",
        "MMD²",
        "threshold",
        "class prior TV",
        "feedback",
        "accuracy",
        "balanced accuracy",
        "ECE",
    )
    thresholds = ", ".join(f"{k}={v}" for k, v in monitoring["thresholds"].items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FedMedCLIP site monitoring</title></head>
<body>
<h1>FedMedCLIP site monitoring</h1>
<p>Drift of the served model: <b>{html.escape(str(monitoring["drift"]))}</b>.
Thresholds: {html.escape(thresholds)}. Computed at the site; no image left it.</p>
<table border="1" cellpadding="4">
<tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr>
{"".join(rows)}
</table>
<img src="{html.escape(png_name)}" alt="class distribution and histograms per model version">
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_report(monitoring: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``monitoring.html`` and ``monitoring.png`` into ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, page = out_dir / "monitoring.png", out_dir / "monitoring.html"
    write_png(monitoring, png)
    write_html(monitoring, page, png.name)
    return page, png
