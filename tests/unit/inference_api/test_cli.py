"""``fedmedclip inference serve``: help text and a clear refusal of bad settings."""

from __future__ import annotations

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
