"""Fixtures of the reliability suite: a figures recorder and one trained site model store.

Set ``FEDMEDCLIP_RELIABILITY_FIGURES=<file.json>`` to get the figures the tests measured
(load held, faults survived, bad inputs tried, examples fuzzed) written at the end of the
session; ``docs/reliability.md`` quotes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class Figures:
    """Numbers the tests measured, keyed by a dotted name."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        self.values[name] = value

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + amount


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    recorder = Figures()
    yield recorder
    if path := os.environ.get("FEDMEDCLIP_RELIABILITY_FIGURES"):
        Path(path).write_text(json.dumps(recorder.values, indent=2, sort_keys=True) + "\n")
