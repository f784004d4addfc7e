"""Fixtures for the console tests: Debian's Chromium driven by Playwright, plus the real
hub and node fixtures of the node integration suite (imported, so both suites run the
same hub and nodes)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.node.conftest import (  # noqa: F401 - fixtures used by these tests
    feature_cache,
    federation,
    hub,
    make_settings,
    run_node,
)

CHROMIUM = os.environ.get("FEDMEDCLIP_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium from the system (Playwright's own browser download is not used)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; scripts/test.sh installs it")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshots(tmp_path: Path, request: pytest.FixtureRequest):
    """``shot(page, name)`` saves a full-page PNG to $FEDMEDCLIP_SCREENSHOTS (or tmp_path)."""
    folder = Path(os.environ.get("FEDMEDCLIP_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    prefix = request.node.name

    def shot(page, name: str) -> Path:
        path = folder / f"{prefix}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        return path

    return shot
