"""The console plumbing without a browser: sign-in, session cookie flags, CSRF, redirects.

Runs against the real hub app (embedded SQLite) through TestClient; the browser tests in
tests/integration/console drive the same pages in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedmedclip.schemas import NodeCreate
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from services.common.console.app import _safe_next, parse_form
from services.common.console.charts import line_chart
from services.common.console.session import COOKIE
from services.common.problems import InvalidRequest

TOKEN = "console-admin-token"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[TestClient]:
    settings = AggregatorSettings(data_dir=tmp_path, admin_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        yield client


def _csrf(client: TestClient, path: str = "/console/signin") -> str:
    match = CSRF.search(client.get(path).text)
    assert match is not None
    return match.group(1)


def _sign_in(client: TestClient, token: str = TOKEN):
    return client.post(
        "/console/signin",
        data={"token": token, "csrf_token": _csrf(client), "next": "/console/models"},
        follow_redirects=False,
    )


def _cookie_header(response) -> str:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE)]
    assert len(headers) == 1, headers
    return headers[0].lower()


def test_pages_redirect_to_sign_in_without_a_session(hub: TestClient) -> None:
    page = hub.get("/console/rounds", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/signin?next=/console/rounds"
    fragment = hub.get("/console/fragments/open-round", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"].startswith(
        "/console/signin"
    )
    assert hub.post("/console/rounds", data={"min_clients": "1"}).status_code == 401


def test_wrong_credential_is_refused(hub: TestClient) -> None:
    refused = _sign_in(hub, "not-the-token")
    assert refused.status_code == 401
    assert "That credential is not valid." in refused.text
    assert hub.get("/console/", follow_redirects=False).status_code == 303


def test_sign_in_sets_a_strict_http_only_cookie(hub: TestClient) -> None:
    response = _sign_in(hub)
    assert response.status_code == 303 and response.headers["location"] == "/console/models"
    cookie = _cookie_header(response)
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert hub.get("/console/models").status_code == 200
    assert "default-src 'self'" in hub.get("/console/").headers["content-security-policy"]


def test_cookie_is_secure_under_https(tmp_path: Path) -> None:
    settings = AggregatorSettings(data_dir=tmp_path, admin_token=TOKEN)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        assert "; secure" in _cookie_header(_sign_in(client))


def test_post_without_csrf_token_is_refused(hub: TestClient) -> None:
    sign_in_without_token = hub.post("/console/signin", data={"token": TOKEN})
    assert sign_in_without_token.status_code == 403
    _sign_in(hub)
    for data in ({"name": "site-x"}, {"name": "site-x", "csrf_token": "wrong"}):
        assert hub.post("/console/nodes", data=data).status_code == 403
    listed = hub.get("/api/v1/nodes", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert listed == []
    created = hub.post(
        "/console/nodes", data={"name": "site-x", "csrf_token": _csrf(hub, "/console/")}
    )
    assert created.status_code == 200 and "Node site-x registered" in created.text


def test_actions_are_audited_with_the_signed_in_actor(hub: TestClient) -> None:
    _sign_in(hub)
    token = _csrf(hub, "/console/")
    hub.post("/console/nodes", data={"name": "site-y", "csrf_token": token})
    events = hub.get("/api/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [(e["actor"], e["action"]) for e in events][:1] == [("admin", "node.create")]


def test_a_tampered_cookie_is_no_session(hub: TestClient) -> None:
    cookie = _cookie_header(_sign_in(hub)).split(";")[0].split("=", 1)[1]
    hub.cookies.clear()
    hub.cookies.set(COOKIE, cookie[:-2] + "xx", path="/console")
    assert hub.get("/console/", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(hub: TestClient) -> None:
    _sign_in(hub)
    response = hub.post("/console/signout", data={"csrf_token": _csrf(hub, "/console/")})
    assert response.url.path == "/console/signin"
    assert hub.get("/console/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/console/models", "/console/models"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/console/", "/console/"),
        ("/api/v1/nodes", "/console/"),
        (None, "/console/"),
    ],
)
def test_sign_in_returns_only_to_console_pages(given: str | None, expected: str) -> None:
    assert _safe_next(given) == expected


def test_form_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequest, match="name"):
        parse_form(NodeCreate, {"name": "no spaces allowed"})


def test_line_chart_scales_into_the_plot_area() -> None:
    assert line_chart([], "accuracy") is None
    chart = line_chart([(0, 0.5), (1, 0.7), (2, 0.6)], "accuracy")
    assert chart is not None
    xs = [x for x, _, _ in chart.dots]
    ys = [y for _, y, _ in chart.dots]
    assert xs == sorted(xs) and xs[0] == chart.margin
    assert ys[1] == min(ys)  # the highest value is drawn at the top
    assert all(0 < y < chart.height for y in ys)
    assert "from 0.5 (v0) to 0.6 (v2)" in chart.description
    flat = line_chart([(0, 1.0), (3, 1.0)], "loss")
    assert flat is not None and len({y for _, y, _ in flat.dots}) == 1


def test_the_vendored_htmx_is_the_pinned_file() -> None:
    """The served htmx is byte for byte the release named in VENDORED.md."""
    import hashlib

    static = Path(__file__).resolve().parents[3] / "services" / "common" / "console" / "static"
    digest = hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest()
    assert digest in (static / "VENDORED.md").read_text()
    assert (static / "htmx.LICENSE").read_text().startswith("Zero-Clause BSD")


@pytest.mark.parametrize(
    "path", ["/console/rounds/9223372036854775808", "/console/models/99999999999/promote"]
)
def test_ids_beyond_the_database_are_a_4xx_in_the_console(hub: TestClient, path: str) -> None:
    _sign_in(hub)
    response = hub.get(path)
    assert response.status_code == 422
    assert "less than or equal to 2147483647" in response.json()["detail"]


def test_a_person_signs_in_with_an_idp_token_and_is_the_audit_actor(tmp_path: Path) -> None:
    """Where single sign-on is configured, an admin's IdP token signs in to the console and
    the console's actions are audited under the person; a clinician's token does not."""
    from tests.support.idp import AUDIENCE, ISSUER, TestIdp

    with TestIdp() as idp:
        settings = AggregatorSettings(
            data_dir=tmp_path,
            admin_token=TOKEN,
            oidc_issuer=ISSUER,
            oidc_audience=AUDIENCE,
            oidc_jwks_url=idp.jwks_url,
            oidc_role_claim="realm_access.roles",
            oidc_role_map="fl-admin=admin",
        )
        with TestClient(create_app(settings)) as client:
            refused = _sign_in(client, idp.token("bob", roles=["radiology"]))
            assert refused.status_code == 401 and "not valid" in refused.text
            signed_in = _sign_in(client, idp.token("alice", roles=["fl-admin"]))
            assert signed_in.status_code == 303
            page = client.get("/console/")
            assert page.status_code == 200
            csrf = CSRF.search(page.text).group(1)
            client.post("/console/nodes", data={"name": "site-sso", "csrf_token": csrf})
            audit = client.get("/api/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"})
            actors = {e["actor"] for e in audit.json() if e["action"] == "node.create"}
            assert actors == {"person:alice (Alice Example)"}
