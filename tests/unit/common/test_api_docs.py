"""``install_offline_docs``: Swagger UI and ReDoc pages whose every asset the app serves."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.api_docs import ASSETS_PATH, install_offline_docs
from tests.support.offline_docs import assert_docs_work_offline, external_urls


def _app(**options) -> FastAPI:
    app = FastAPI(title="Docs test", **options)

    @app.get("/items")
    def items() -> list[str]:
        return ["a"]

    return app


def test_fastapis_default_docs_load_from_the_internet() -> None:
    """The check below would catch the CDN pages this module replaces."""
    client = TestClient(_app())
    assert external_urls(client.get("/docs").text)
    assert external_urls(client.get("/redoc").text)


def test_docs_pages_and_their_assets_come_from_the_app() -> None:
    app = _app()
    install_offline_docs(app)
    client = TestClient(app)
    loaded = assert_docs_work_offline(client)
    assert {
        f"{ASSETS_PATH}/swagger-ui-bundle.js",
        f"{ASSETS_PATH}/swagger-ui.css",
        f"{ASSETS_PATH}/favicon.png",
    } <= set(loaded["/docs"])
    assert {f"{ASSETS_PATH}/redoc.standalone.js", f"{ASSETS_PATH}/favicon.png"} <= set(
        loaded["/redoc"]
    )
    script = client.get(f"{ASSETS_PATH}/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"]
    assert "SwaggerUIBundle" in script.text
    assert (
        client.get(f"{ASSETS_PATH}/swagger-ui.css").headers["content-type"].startswith("text/css")
    )
    assert client.get(f"{ASSETS_PATH}/favicon.png").content.startswith(b"\x89PNG")


def test_each_default_docs_route_is_replaced_not_doubled() -> None:
    app = _app()
    install_offline_docs(app)
    paths = [getattr(route, "path", None) for route in app.routes]
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc"):
        assert paths.count(path) == 1, path


def test_swagger_ui_is_configured_as_fastapi_does_without_the_public_validator() -> None:
    app = _app(swagger_ui_parameters={"deepLinking": False})
    install_offline_docs(app)
    html = TestClient(app).get("/docs").text
    assert '"validatorUrl": null' in html
    assert '"deepLinking": false' in html  # the app's own parameters still apply
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in html
    assert "url: '/openapi.json'" in html


def test_urls_carry_the_proxy_prefix() -> None:
    app = _app()
    install_offline_docs(app)
    client = TestClient(app, root_path="/hub")
    docs = client.get("/docs").text
    assert f"/hub{ASSETS_PATH}/swagger-ui-bundle.js" in docs
    assert "url: '/hub/openapi.json'" in docs
    assert f"/hub{ASSETS_PATH}/redoc.standalone.js" in client.get("/redoc").text


def test_pages_switched_off_stay_off() -> None:
    app = _app(redoc_url=None)
    install_offline_docs(app)
    client = TestClient(app)
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs").status_code == 200

    closed = _app(docs_url=None, redoc_url=None)
    install_offline_docs(closed)
    client = TestClient(closed)
    assert client.get("/docs").status_code == 404
    assert client.get(f"{ASSETS_PATH}/swagger-ui.css").status_code == 404
