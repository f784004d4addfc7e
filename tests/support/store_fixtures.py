"""Expensive model fixtures shared by the inference and reliability suites: one backbone,
one synthetic site and one trained model store per session (tests get private copies).

Registered for the whole suite through ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedmedclip.backbone import Backbone, cached_backbone
from fedmedclip.model_store import ModelStore
from tests.support.model_store import SiteData, build_model_store, synthetic_site


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    # The same process-wide instance the apps under test use, so it is built only once.
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
    """A private copy of the trained store that a test may change."""
    return ModelStore(shutil.copytree(trained_store, tmp_path / "store"))
