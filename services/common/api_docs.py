"""Interactive API docs (Swagger UI at ``/docs``, ReDoc at ``/redoc``) that work offline.

FastAPI's default docs pages load their script, styles and favicon from public CDNs, so
on a hospital network cut off from the internet ``/docs`` is a blank page. The same
pages are served here with every asset coming from the application itself: the Swagger
UI 5 and ReDoc 2 bundles (the major versions FastAPI's defaults load) and FastAPI's
favicon, as shipped by the pinned ``fastapi-offline`` package (MIT; its ``static``
folder holds ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js`` and
``favicon.png``). Only that folder is used, not the package's app factory, so that each
service keeps building its own ``FastAPI`` instance.

ReDoc's page asks for no Google fonts (they would come from the internet); it falls back
to the browser's sans-serif fonts. The pages stay token-free like FastAPI's: they carry
the API contract, no data (see tests/reliability/test_security.py).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

ASSETS_PATH = "/docs/assets"
"""Where the bundled scripts, styles and favicon are served."""

OFFLINE_SWAGGER_PARAMETERS = {"validatorUrl": None}
"""Swagger UI would otherwise know a public validator service; offline it has none."""


def assets_dir() -> Path:
    """The folder of the pinned Swagger UI and ReDoc bundles (package data)."""
    return Path(str(files("fastapi_offline") / "static"))


def install_offline_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-based ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` of
    ``app`` with pages whose every asset the app serves itself under :data:`ASSETS_PATH`.

    Called once in each app factory, after ``FastAPI(...)``: the paths stay those the app
    was configured with (``docs_url``, ``swagger_ui_oauth2_redirect_url``, ``redoc_url``),
    and a path set to ``None`` stays off.
    """
    default_pages = {app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url} - {None}
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not (isinstance(route, Route) and route.path in default_pages)
    ]
    if not app.openapi_url or not (app.docs_url or app.redoc_url):
        return
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="api-docs-assets")
    openapi_url = app.openapi_url

    def _root(request: Request) -> str:
        # Behind a proxy that strips a prefix, every URL of the page carries it again.
        return request.scope.get("root_path", "").rstrip("/")

    if app.docs_url:
        oauth2_redirect = app.swagger_ui_oauth2_redirect_url
        parameters = OFFLINE_SWAGGER_PARAMETERS | (app.swagger_ui_parameters or {})

        async def swagger_ui(request: Request) -> HTMLResponse:
            root = _root(request)
            return get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                oauth2_redirect_url=root + oauth2_redirect if oauth2_redirect else None,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=parameters,
            )

        app.add_route(app.docs_url, swagger_ui, include_in_schema=False)
        if oauth2_redirect:

            async def swagger_ui_redirect(_: Request) -> HTMLResponse:
                return get_swagger_ui_oauth2_redirect_html()

            app.add_route(oauth2_redirect, swagger_ui_redirect, include_in_schema=False)

    if app.redoc_url:

        async def redoc(request: Request) -> HTMLResponse:
            root = _root(request)
            return get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                with_google_fonts=False,
            )

        app.add_route(app.redoc_url, redoc, include_in_schema=False)
