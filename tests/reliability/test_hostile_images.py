"""Hostile images cost bounded memory: thin strips are refused, huge images are reduced.

Each image goes through the inference API's per-image path (``Backbone.prepare_bytes``:
decode, bound, preprocess) in a child process of ``bench/peak_rss.py``, which resets the
kernel's peak-RSS counter after building the model, so the figure is the decode's own peak.
Before the fix, the 89-byte 10000 x 1 PNG peaked 2 GB above the process (the resize to a
224-pixel short side) and the 1 x 50,000,000 one raised OverflowError (a 500).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "peak_rss.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peak_rss", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peaks(paths: list[Path]) -> list[dict]:
    """One child process measures every file (a peak-counter reset before each)."""
    command = [sys.executable, str(BENCH), "--child", *map(str, paths)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    return [json.loads(line) for line in out.stdout.strip().splitlines()[-len(paths) :]]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to measure a peak RSS")
    return _bench()


def test_thin_pngs_are_refused_in_bounded_memory(bench, tmp_path, figures):
    names = ["thin-wide", "thin-tall"]
    paths = []
    for name in names:
        paths.append(tmp_path / name)
        paths[-1].write_bytes(bench.inputs()[name]())
    for name, result in zip(names, _peaks(paths), strict=True):
        figures.set(f"hostile_images.{name}.peak_above_baseline_mb", round(result["delta_mb"]))
        assert "ImageDecodeError" in result["outcome"], (name, result)
        assert "thinner than the 1:20 aspect ratio" in result["outcome"], (name, result)
        assert result["delta_mb"] < 200, (name, result)
