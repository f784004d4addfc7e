"""The ``fedmedclip data synth`` and ``fedmedclip simulate`` commands, end to end."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fedmedclip.simulator.config import SimulationConfig
from services.cli import app
from services.commands import simulate as simulate_command

runner = CliRunner()


def _plain(output: str) -> str:
    """Output without rich's box drawing and line wrapping, for message checks."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    args = ["data", "synth", "--out", str(root), "--hospitals", "2", "--classes", "3"]
    result = runner.invoke(app, [*args, "--per-hospital", "24", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    assert "wrote 48 images for 2 hospitals" in result.output
    return root


def test_synth_writes_a_federation_and_refuses_a_full_folder(data_dir: Path) -> None:
    assert json.loads((data_dir / "classes.json").read_text()) == [
        "nevus",
        "melanoma",
        "keratosis",
    ]
    assert len(list(data_dir.rglob("*.png"))) == 48
    again = runner.invoke(app, ["data", "synth", "--out", str(data_dir)])
    assert again.exit_code == 2
    assert "is not empty" in again.output
    assert "writing images" not in again.output and "0%" not in again.output  # no bar drawn


def test_synth_draws_its_bar_while_writing(tmp_path: Path) -> None:
    args = ["data", "synth", "--out", str(tmp_path / "d"), "--hospitals", "1"]
    result = runner.invoke(app, [*args, "--per-hospital", "4", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    assert "writing images" in result.output and "100%" in result.output


def test_simulate_help_groups_its_options_in_panels() -> None:
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    titles = re.findall(r"╭─ (.+?) ─", result.output)
    assert titles == ["Options", "Data", "Method", "Output and run", "Privacy"]
    panel_of = {}
    for title, body in re.findall(r"╭─ (.+?) ─+╮\n(.*?)╰", result.output, re.S):
        for option in re.findall(r"(--[a-z-]+)", body):
            panel_of.setdefault(option, title)
    assert panel_of["--val-fraction"] == "Data"
    assert panel_of["--method"] == "Method"
    assert panel_of["--dp-delta"] == "Privacy"
    assert panel_of["--out"] == "Output and run"
    assert "Options" not in {panel_of[o] for o in ("--data", "--rounds", "--seed")}


def test_every_config_field_is_an_option_with_the_configs_default(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings are declared once, in SimulationConfig: each field is an option, and a
    run without options builds the config's defaults (the device aside: the command's
    ``auto`` picks the GPU when there is one)."""
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    options = {param.name: param for param in command.params}
    for field in dataclasses.fields(SimulationConfig):
        option = options.get(field.name)
        assert option is not None and option.param_type_name == "option", field.name

    built: list[SimulationConfig] = []
    config_from = simulate_command.config_from

    def build_and_stop(config_class: type, settings: dict[str, Any], **values: Any) -> None:
        assert settings["device"] == simulate_command.AUTO_DEVICE
        built.append(config_from(config_class, settings, device="cpu"))
        raise typer.Exit(0)

    monkeypatch.setattr(simulate_command, "config_from", build_and_stop)
    result = runner.invoke(app, ["simulate", "--data", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert built == [SimulationConfig()]


@pytest.mark.slow
def test_simulate_writes_the_report(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--data", str(data_dir), "--rounds", "2", "--local-epochs", "1"]
    result = runner.invoke(
        app, [*args, "--method", "fedmedclip", "--codec", "int8", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "CLIP weights are RANDOM" in result.output
    assert "fedmedclip round 2/2" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["fedmedclip"]
    assert metrics["config"]["codec"] == "int8" and metrics["config"]["seed"] == 3
    assert (out / "report.md").is_file() and (out / "curves.png").is_file()
    assert any((out / "feature_cache").rglob("*.npy"))


@pytest.mark.slow
def test_simulate_takes_a_comma_separated_method_list_and_warns_once(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--data", str(data_dir), "--rounds", "1", "--local-epochs", "1"]
    with caplog.at_level(logging.INFO, logger="fedmedclip.backbone"):
        result = runner.invoke(
            app, [*args, "--method", "zeroshot, fedmedclip,zeroshot", "--out", str(out)]
        )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["zeroshot", "fedmedclip"]
    # The command's own warning is the one the user reads; the library logs it at INFO only.
    assert result.output.count("CLIP weights are RANDOM") == 1
    random_records = [r for r in caplog.records if "CLIP weights are RANDOM" in r.getMessage()]
    assert [r.levelno for r in random_records] == [logging.INFO]


@pytest.mark.slow
def test_simulate_with_differential_privacy_reports_epsilon(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--data", str(data_dir), "--rounds", "2", "--local-epochs", "1"]
    dp = ["--dp-clip-norm", "0.5", "--dp-noise-multiplier", "4", "--dp-delta", "1e-6"]
    result = runner.invoke(app, [*args, *dp, "--method", "fedmedclip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dp_noise_multiplier"] == 4.0
    assert metrics["config"]["dp_delta"] == 1e-6
    epsilon = metrics["methods"]["fedmedclip"]["dp_epsilon"]
    assert "round 2/2" in result.output and f"ε {epsilon:.2f}" in result.output
    assert f"final ε = {epsilon:.2f} at δ = 1e-06" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "bogus"], "bogus"),
        (["--method", "fedavg,bogus"], "unknown method bogus; give one of fedmedclip"),
        (["--method", ","], "no method named"),
        (["--val-fraction", "1.5"], "'--val-fraction': 1.5 is not a share of the images"),
        (["--test-fraction", "0"], "'--test-fraction': 0.0 is not a share of the images"),
        (
            ["--val-fraction", "0.5", "--test-fraction", "0.6"],
            "add up to 1.1, which leaves no images for training",
        ),
        (["--codec", "int2"], "int2"),
        (["--lr-search", "1,x"], "invalid settings"),
        (["--combination", "vote"], "'vote' is not one of"),
        (["--settings", "paper"], "'paper' is not one of"),
        (["--dp-clip-norm", "1"], "needs both dp_clip_norm and dp_noise_multiplier"),
        (["--dp-clip-norm", "-1", "--dp-noise-multiplier", "1"], "clip_norm must be a positive"),
        (["--dp-clip-norm", "1", "--dp-noise-multiplier", "1"], "fedavg cannot run with"),
    ],
)
def test_simulate_rejects_bad_options(
    data_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["simulate", "--data", str(data_dir), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 2
    assert message in _plain(result.output)


def test_simulate_names_a_missing_data_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in _plain(result.output)


def test_research_commands_import_nothing_heavy() -> None:
    """``fedmedclip --help`` must stay quick: torch loads only inside the commands."""
    code = (
        "import sys, typer.main, services.cli; typer.main.get_command(services.cli.app); "
        "print('torch' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"
