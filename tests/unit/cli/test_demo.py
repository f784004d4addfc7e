"""The demo's process group (what every child it starts is told) and its held-out set."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmedclip.weights_notice import RANDOM_WEIGHTS_ANNOUNCED_ENV
from services.cli import app
from services.commands.demo import run
from services.commands.demo.config import DemoConfig
from services.commands.demo.processes import ProcessGroup
from services.commands.demo.run import MIN_LEFT_PER_CLASS, _hold_out


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_every_child_gets_the_group_env_under_its_own(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path, {RANDOM_WEIGHTS_ANNOUNCED_ENV: "1", "SHARED": "group"})
    try:
        # A child needs far longer to import the CLI than we need to read its environment.
        first = group.start("first", ["--help"], {"OWN": "a"})
        second = group.start("second", ["--help"], {"SHARED": "own"})
        first_env, second_env = _environ(first.pid), _environ(second.pid)
    finally:
        group.stop()
    assert first_env[RANDOM_WEIGHTS_ANNOUNCED_ENV] == "1"
    assert second_env[RANDOM_WEIGHTS_ANNOUNCED_ENV] == "1"
    assert first_env["OWN"] == "a" and "OWN" not in second_env
    assert first_env["SHARED"] == "group" and second_env["SHARED"] == "own"
    assert first.poll() is not None and second.poll() is not None  # stopped together


def test_the_held_out_set_is_class_balanced_and_leaves_the_site_images(tmp_path: Path) -> None:
    site = tmp_path / "hospital_0"
    sizes = {"nevus": 30, "melanoma": 9, "keratosis": 20}
    for name, count in sizes.items():
        (site / name).mkdir(parents=True)
        for i in range(count):
            (site / name / f"{i:04d}.png").write_bytes(b"png")
    held = _hold_out(site, tmp_path / "held", list(sizes), per_class=8)
    labels = [label for _, label in held]
    # The rarest class can spare 9 - MIN_LEFT_PER_CLASS images: every class gives that many.
    assert {labels.count(n) for n in sizes} == {9 - MIN_LEFT_PER_CLASS}
    assert all(path.is_file() and site not in path.parents for path, _ in held)
    assert len(list((site / "melanoma").iterdir())) == MIN_LEFT_PER_CLASS


def test_secure_demo_needs_three_hospitals(tmp_path: Path) -> None:
    """Secure aggregation hides a site only among three or more: refused before anything
    starts, naming the option."""
    result = CliRunner().invoke(
        app, ["demo", "--secure-aggregation", "--hospitals", "2", "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "at least 3 hospitals" in result.output
    assert not (tmp_path / "d").exists()


def test_the_options_are_the_configs_fields_with_its_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Declared once, in DemoConfig: a run without options runs the config's defaults, and
    a given option reaches the run under its field's name."""
    runs: list[DemoConfig] = []
    monkeypatch.setattr(run, "run_demo", lambda **options: runs.append(DemoConfig(**options)))
    assert CliRunner().invoke(app, ["demo"]).exit_code == 0
    given = ["demo", "--rounds", "2", "--redis-url", "redis://r", "--out", "elsewhere"]
    assert CliRunner().invoke(app, given).exit_code == 0
    assert runs == [
        DemoConfig(),
        DemoConfig(rounds=2, redis_url="redis://r", out=Path("elsewhere")),
    ]
