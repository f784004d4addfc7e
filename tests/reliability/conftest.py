"""Fixtures of the reliability suite: a figures recorder and one trained site model store.

Set ``FEDMEDCLIP_RELIABILITY_FIGURES=<file.json>`` to get the figures the tests measured
(load held, faults survived, bad inputs tried, examples fuzzed) written at the end of the
session; ``docs/reliability.md`` quotes them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedmedclip.backbone import Backbone, cached_backbone
from fedmedclip.model_store import ModelStore
from tests.support.model_store import SiteData, build_model_store, synthetic_site


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


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    # The process-wide instance the inference apps under test use, built once.
    return cached_backbone("ViT-S-32", "none", "cpu")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, backbone: Backbone) -> SiteData:
    return synthetic_site(tmp_path_factory.mktemp("site"), backbone, images=24)


@pytest.fixture(scope="session")
def trained_store(
    tmp_path_factory: pytest.TempPathFactory, backbone: Backbone, site: SiteData
) -> Path:
    """A store holding one trained round (global v1, head 1); tests use copies."""
    return build_model_store(tmp_path_factory.mktemp("trained"), backbone, site).root


@pytest.fixture
def store(tmp_path: Path, trained_store: Path) -> ModelStore:
    """A private copy of the trained store."""
    return ModelStore(shutil.copytree(trained_store, tmp_path / "store"))
