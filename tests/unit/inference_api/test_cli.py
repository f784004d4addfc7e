"""``fedmedclip inference serve``: help text and a clear refusal of bad settings."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.inference_api.cli import app

runner = CliRunner()


def test_serve_help_names_the_settings():
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "FEDMEDCLIP_INFERENCE_" in result.output and "--port" in result.output


def test_serve_refuses_to_start_without_clinician_tokens(monkeypatch):
    monkeypatch.delenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS", raising=False)
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "clinician_tokens" in result.output


def _monitoring() -> dict:
    unit = [i / 10 for i in range(11)]
    histogram = {"edges": unit, "counts": [0] * 9 + [3], "mean": 0.95}
    return {
        "serving": {"global_version": 2, "head_version": 1},
        "drift": "drift",
        "thresholds": {"window": 256, "drift_alpha": 0.01},
        "versions": [
            {
                "global_version": 2,
                "head_version": 1,
                "predictions": 3,
                "class_names": ["a", "b"],
                "class_prior": {
                    "predicted": [1.0, 0.0],
                    "training": [0.5, 0.5],
                    "total_variation": 0.5,
                },
                "histograms": {"confidence": histogram, "entropy": histogram, "alpha": histogram},
                "drift": {"state": "drift", "mmd": 0.31, "threshold": 0.1},
                "feedback": {"labelled": 2, "accuracy": 0.5, "ece": 0.25},
            }
        ],
    }


@pytest.mark.slow
def test_report_writes_html_and_png_from_saved_monitoring(tmp_path):
    import json

    from PIL import Image

    source = tmp_path / "monitoring.json"
    source.write_text(json.dumps(_monitoring()))
    result = runner.invoke(app, ["report", "--from-file", str(source), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "monitoring.html").read_text()
    assert "<b>drift</b>" in page and "0.3100" in page and "0.5000" in page
    with Image.open(tmp_path / "monitoring.png") as image:
        assert image.format == "PNG" and image.width > 400


def test_report_needs_a_token_to_read_the_api(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDMEDCLIP_INFERENCE_REPORT_TOKEN", raising=False)
    result = runner.invoke(app, ["report", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "FEDMEDCLIP_INFERENCE_REPORT_TOKEN" in result.output
