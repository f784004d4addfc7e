"""Each chart's README lists every value, and its generated table is up to date."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "chart_values_table.py"
CHARTS = [ROOT / "deploy" / "k8s" / name for name in ("fedmedclip-hub", "fedmedclip-site")]


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def leaf_keys(values: dict, prefix: str = "") -> set[str]:
    """Dotted keys of the leaves, computed here independently of the script."""
    keys = set()
    for key, value in values.items():
        if isinstance(value, dict) and value and all(k[0].islower() and k.isalnum() for k in value):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_readme_tables_are_current() -> None:
    result = run_script("--check", *map(str, CHARTS))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.name)
def test_readme_lists_every_value(chart: Path) -> None:
    readme = (chart / "README.md").read_text()
    keys = leaf_keys(yaml.safe_load((chart / "values.yaml").read_text()))
    assert len(keys) > 50
    missing = sorted(key for key in keys if f"| `{key}` |" not in readme)
    assert not missing, missing
    # A value's comment in values.yaml is its description.
    assert "| `generateSecrets` | `true` | Generate the secrets left empty" in readme


def test_check_fails_when_a_value_is_added(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHARTS[0], chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text() + "\n# A new knob.\nnewKnob: 3\n")
    result = run_script("--check", str(chart))
    assert result.returncode == 1 and "outdated values table" in result.stderr
    assert run_script(str(chart)).returncode == 0
    assert "| `newKnob` | `3` | A new knob. |" in (chart / "README.md").read_text()
    assert run_script("--check", str(chart)).returncode == 0
