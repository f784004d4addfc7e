"""``fedmedclip demo`` end to end, as a newcomer runs it (a small configuration).

About two and a half minutes on two busy CPU cores (data, embedding, two rounds, /predict)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.integration
def test_demo_runs_a_federation_and_predicts(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "demo",
            "--rounds",
            "2",
            "--hospitals",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RANDOM" in proc.stdout, "the demo must say that the CLIP weights are random"
    assert proc.stdout.count("RANDOM") + proc.stderr.count("RANDOM") == 1, "said once is enough"
    for log in (out / "logs").glob("*.log"):
        for line in log.read_text().splitlines():
            if "CLIP weights are RANDOM" in line:  # the header said it: children log INFO
                assert "warning" not in line.lower(), (log.name, line)
    report = json.loads((out / "report.json").read_text())
    assert [r["state"] for r in report["rounds"]] == ["published", "published"]
    assert [r["version"] for r in report["rounds"]] == [1, 2]
    predictions = report["predictions"]
    assert predictions, "held-out images must be sent to /predict"
    classes = set(report["classes"])
    for p in predictions:
        assert p["label"] in classes
        assert p["model"]["global_version"] == 2  # the promoted production version
        assert p["model"]["weights"] == "random"
    for r in report["rounds"]:
        assert all(0 < b < 400_000 for b in r["bytes_sent"].values())
        for scores in r["site_metrics"].values():
            assert set(scores) == {"accuracy", "balanced_accuracy", "macro_f1"}
            assert all(0 <= v <= 1 for v in scores.values())
    # The held-out check is class-balanced, never trained on, and clearly above chance.
    truths = [p["truth"] for p in predictions]
    assert {truths.count(c) for c in classes} == {len(truths) // len(classes)}
    assert report["predict_chance"] == 1 / len(classes)
    assert report["predict_balanced_accuracy"] >= report["predict_chance"] + 0.25
    assert len({p["label"] for p in predictions}) > 1, "one class predicted for everything"
    # The improvement sentence states the table's numbers, first round against the last.
    first, last = (report["rounds"][i]["mean"]["balanced_accuracy"] for i in (0, -1))
    assert f"{first:.2f}" in report["improvement"] and f"{last:.2f}" in report["improvement"]
    assert report["improvement"] in (out / "report.md").read_text()
    assert report["improvement"] in " ".join(proc.stdout.split())
    # Every line of the rounds table (plain rows: stdout is not a terminal) fits 80 columns.
    table = proc.stdout[proc.stdout.index("Rounds:") :].splitlines()[: 2 + len(report["rounds"])]
    assert [line.split()[0] for line in table[2:]] == ["1", "2"]
    assert max(len(line) for line in table) <= 80
    assert (out / "report.png").stat().st_size > 10_000
    assert "/predict on" in (out / "report.md").read_text()
    # Every process the demo started is gone (they carry the demo folder in their environment).
    assert _processes_mentioning(str(out)) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if text.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # the process ended meanwhile, or is not ours to read
    return found
