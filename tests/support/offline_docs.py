"""Checks that an app's docs pages work without the internet (shared by the service tests)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from starlette.routing import Route

EXTERNAL_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.IGNORECASE)
"""An absolute URL with a host (``https://cdn...``, ``//fonts...``): what an offline page
must not load. Root-relative paths (``/docs/assets/x.js``) do not match."""

ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def external_urls(text: str) -> list[str]:
    """Every absolute URL naming a host in ``text``."""
    return EXTERNAL_URL.findall(text)


def assets_of(html: str) -> list[str]:
    """The URLs a page loads through ``src=`` or ``href=`` attributes."""
    return ASSET_REFERENCE.findall(html)


def html_pages(client: TestClient) -> dict[str, str]:
    """The HTML of every GET route without path parameters, requested without a token."""
    pages = {}
    for route in client.app.routes:
        if not isinstance(route, Route) or "GET" not in (route.methods or ()):
            continue
        if "{" in route.path:
            continue
        response = client.get(route.path)
        if response.headers.get("content-type", "").startswith("text/html"):
            pages[route.path] = response.text
    return pages


def assert_docs_work_offline(client: TestClient) -> dict[str, list[str]]:
    """``/docs`` and ``/redoc`` answer 200 without a token, every asset they load answers
    200 from the app itself, and no HTML page nor the OpenAPI document names a host.

    Returns the assets each page loads, for further checks.
    """
    pages = html_pages(client)
    assert {"/docs", "/redoc", "/docs/oauth2-redirect"} <= set(pages), sorted(pages)
    loaded: dict[str, list[str]] = {}
    for path, html in pages.items():
        assert external_urls(html) == [], (path, external_urls(html))
        loaded[path] = assets_of(html)
        for asset in loaded[path]:
            response = client.get(asset)
            assert response.status_code == 200, (path, asset, response.status_code)
            assert len(response.content) > 100, (path, asset)
    openapi = client.get(client.app.openapi_url)
    assert openapi.status_code == 200
    assert external_urls(openapi.text) == []
    for page in ("/docs", "/redoc"):
        assert any(a.endswith(".js") for a in loaded[page]), (page, loaded[page])
    return loaded
