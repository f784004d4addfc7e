"""Simulation outputs: ``metrics.json`` (everything), ``report.md`` (methods side by side)
and ``curves.png`` (mean validation and test accuracy per round)."""

from __future__ import annotations

import json
from pathlib import Path

from fedmedclip.simulator.runner import MethodResult, RoundRecord, SimulationResult

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CURVES_FILE = "curves.png"


def _round_json(record: RoundRecord) -> dict:
    return {
        "round": record.round,
        "val": record.val,
        "test": record.test,
        "sites": {
            site: splits
            | {
                "bytes_up": record.bytes_up.get(site, 0),
                "bytes_down": record.bytes_down_per_client,
            }
            for site, splits in record.sites.items()
        },
        "bytes_up_per_client": record.bytes_up_per_client,
        "bytes_down_per_client": record.bytes_down_per_client,
        "train_seconds": record.train_seconds,
        "seconds": record.seconds,
        "dp_epsilon_round": record.dp_epsilon_round,
        "dp_epsilon": record.dp_epsilon,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def method_summary(result: MethodResult) -> dict:
    """The headline figures of one method: test metrics at the round best on validation."""
    best = result.best
    return {
        "options": result.options,
        "lr": result.lr,
        "lr_search": result.lr_search,
        "best_round": best.round,
        "val": best.val,
        "test": best.test,
        "test_per_site": {site: splits["test"] for site, splits in best.sites.items()},
        "bytes_up_per_client_per_round": _mean([r.bytes_up_per_client for r in result.rounds]),
        "bytes_down_per_client_per_round": _mean(
            [float(r.bytes_down_per_client) for r in result.rounds]
        ),
        "train_seconds": sum(r.train_seconds for r in result.rounds),
        "seconds": result.seconds,
        "dp_epsilon": result.dp_epsilon,
    }


def metrics_json(result: SimulationResult) -> dict:
    return {
        "config": result.config.to_dict(),
        "federation": result.federation,
        "majority_baseline": result.majority,
        "methods": {
            name: method_summary(m) | {"rounds": [_round_json(r) for r in m.rounds]}
            for name, m in result.methods.items()
        },
    }


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f}"


def _dp_line(result: SimulationResult) -> str:
    """The DP settings and the epsilon the sites spent, for the report's settings list."""
    config = result.config
    dp = config.dp
    secure = "- secure aggregation: " + ("on" if config.secure_aggregation else "off")
    if dp is None:
        return secure + "\n- differential privacy: off"
    spent = [m.dp_epsilon for m in result.methods.values() if m.dp_epsilon is not None]
    epsilon = f"{max(spent):.2f}" if spent else "0 (no method sent an update)"
    per_run = " per run of the learning-rate search" if len(config.lr_factors) > 1 else ""
    kind = (
        "distributed over the sites, central noise in the secure sum"
        if config.dp_mode == "distributed"
        else "per site, client-side"
    )
    return (
        secure
        + "\n"
        + (
            f"- differential privacy ({kind}): clip norm {dp.clip_norm:g}, "
            f"noise multiplier {dp.noise_multiplier:g}; final ε = {epsilon}{per_run} "
            f"at δ = {dp.delta:g} (RDP, replace_one)"
        )
    )


def markdown_report(result: SimulationResult) -> str:
    """Methods side by side, then test accuracy per site."""
    config, fed = result.config, result.federation
    lines = ["# FedMedCLIP simulation report", ""]
    if fed["random_weights"]:
        lines += [
            "> **CLIP weights are RANDOM** (`--pretrained none`): the embeddings carry no "
            "pretrained knowledge and the text prototypes are nearly collinear. Compare "
            "methods against the majority-class baseline, not against published figures.",
            "",
        ]
    lines += [
        f"- data: {len(fed['sites'])} sites, {len(fed['class_names'])} classes "
        f"({', '.join(fed['class_names'])})",
        f"- backbone: `{fed['backbone']}` (D={fed['embedding_dim']}); "
        f"{fed['images_encoded']} images encoded in {fed['embed_seconds']:.1f} s, "
        "the rest read from the feature cache",
        f"- rounds: {config.rounds}, local epochs: {config.local_epochs}, lr: {config.lr:g}, "
        f"codec: {config.codec}{' + error feedback' if config.error_feedback else ''}, "
        f"aggregation: {config.aggregation_rule}, seed: {config.seed}",
        f"- learnable prototypes: {config.learn_prototypes}, calibration: {config.calibrate}, "
        f"adaptive KD: {config.adaptive_kd}",
        _dp_line(result),
        "- each method is reported at the round with the best mean **validation** balanced "
        "accuracy; test metrics are means over sites at that round",
        "",
        "| method | round | test acc | balanced acc | macro-F1 | ECE | up KB/client/round "
        "| down KB/client/round | time s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, method in result.methods.items():
        s = method_summary(method)
        t = s["test"]
        lines.append(
            f"| {name} | {s['best_round']} | {t['accuracy']:.3f} | {t['balanced_accuracy']:.3f} "
            f"| {t['macro_f1']:.3f} | {t['ece']:.3f} | {_kb(s['bytes_up_per_client_per_round'])} "
            f"| {_kb(s['bytes_down_per_client_per_round'])} | {s['seconds']:.1f} |"
        )
    m = result.majority["test"]
    lines.append(
        f"| majority class (per site, from train) | - | {m['accuracy']:.3f} "
        f"| {m['balanced_accuracy']:.3f} | {m['macro_f1']:.3f} | {m['ece']:.3f} | 0 | 0 | 0 |"
    )
    names = list(result.methods)
    lines += [
        "",
        "## Test accuracy per site",
        "",
        "| site | " + " | ".join(names) + " | majority |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for site in fed["sites"]:
        cells = [
            f"{method_summary(result.methods[n])['test_per_site'][site]['accuracy']:.3f}"
            for n in names
        ]
        majority = result.majority["sites"][site]["accuracy"]
        lines.append(f"| {site} | " + " | ".join(cells) + f" | {majority:.3f} |")
    notes = [
        f"- {name}: " + ", ".join(f"{k}={v}" for k, v in method.options.items())
        for name, method in result.methods.items()
        if method.options
    ]
    if notes:
        lines += ["", "## Method options", "", *notes]
    return "\n".join(lines) + "\n"


def plot_curves(result: SimulationResult, path: Path) -> None:
    """Mean validation and test accuracy per round; untrained references as lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split in zip(axes, ("val", "test"), strict=True):
        for index, (name, method) in enumerate(result.methods.items()):
            values = [getattr(r, split)["accuracy"] for r in method.rounds]
            style = {"color": f"C{index}", "label": name}
            if any(r.round == 0 for r in method.rounds):  # no training: one flat reference
                ax.axhline(values[0], linestyle=":", **style)
            else:
                ax.plot([r.round for r in method.rounds], values, marker="o", **style)
        if split == "test":
            majority = result.majority["test"]["accuracy"]
            ax.axhline(majority, color="grey", linestyle="--", label="majority class")
        ax.set_title(f"mean {'validation' if split == 'val' else 'test'} accuracy over sites")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: SimulationResult, out: Path) -> dict[str, Path]:
    """Write the three outputs into ``out`` and return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / METRICS_FILE,
        "report": out / REPORT_FILE,
        "curves": out / CURVES_FILE,
    }
    paths["metrics"].write_text(json.dumps(metrics_json(result), indent=2) + "\n")
    paths["report"].write_text(markdown_report(result))
    plot_curves(result, paths["curves"])
    return paths
