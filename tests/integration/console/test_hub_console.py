"""The hub console in a real browser: sign in, register nodes, run a round with two real
nodes, promote, roll back and read the audit, with screenshots and accessibility checks."""

from __future__ import annotations

import re

import pytest

from tests.integration.console.browser import assert_accessible, sign_in, tab_to
from tests.integration.node.conftest import HUB_ADMIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _flash(page) -> str:
    return page.locator("p.flash").inner_text()


def _register(page, base: str, name: str) -> str:
    page.goto(f"{base}/console/")
    page.fill("#node_name", name)
    page.press("#node_name", "Enter")
    heading = page.locator("h1")
    assert heading.inner_text() == f"Node {name} registered"
    token = page.locator("#node-token").inner_text().strip()
    assert len(token) > 30
    return token


def test_wrong_credential_is_refused(hub, page, screenshots) -> None:
    page.goto(f"{hub.url}/console/models")
    assert re.search(r"/console/signin\?next=/console/models$", page.url)
    assert_accessible(page)
    page.fill("#token", "not-the-admin-token")
    page.press("#token", "Enter")
    assert page.locator("p.flash.error").inner_text() == "That credential is not valid."
    screenshots(page, "refused")
    page.goto(f"{hub.url}/console/")
    assert "/console/signin" in page.url  # still not signed in


def test_round_with_two_nodes_promote_rollback_audit(
    hub, federation, make_settings, run_node, page, screenshots
) -> None:
    base = hub.url
    sign_in(page, base, HUB_ADMIN)
    assert_accessible(page)
    screenshots(page, "overview-empty")

    tokens = {name: _register(page, base, name) for name in ("site-a", "site-b")}
    screenshots(page, "node-registered")
    nodes = [
        run_node(make_settings(name, token=token, auto_join=True)) for name, token in tokens.items()
    ]
    for node, folder in zip(nodes, federation.hospital_dirs, strict=True):
        assert node.register(folder).status_code == 201

    page.goto(f"{base}/console/")
    page.fill("#min_clients", "2")
    page.fill("#local_epochs", "2")
    page.fill("#batch_size", "16")
    tab_to(page, "#lr")
    page.keyboard.press("Enter")  # a form submits from the keyboard
    assert _flash(page) == "Round 1 opened on version 0."
    assert_accessible(page)

    # The open round's progress refreshes itself (htmx polling), without a reload.
    page.wait_for_function(
        "() => document.querySelector('#open-round').innerText.includes('2 of 2 updates')",
        timeout=180_000,
    )
    section = page.locator("#open-round").inner_text()
    assert "site-a" in section and "site-b" in section
    screenshots(page, "round-progress")
    table = page.locator("table").last.inner_text()
    assert re.search(r"site-a\s+online", table) and re.search(r"site-b\s+online", table)

    page.goto(f"{base}/console/rounds/1")
    page.get_by_role("link", name="Aggregate round 1 now").click()
    assert_accessible(page)
    page.get_by_role("button", name="Aggregate now").click()
    assert _flash(page) == "Round 1 is published."
    assert page.locator("#round-state").inner_text() == "published"
    per_site = page.locator("table").inner_text()
    assert "site-a" in per_site and "site-b" in per_site and "test_accuracy" in per_site
    screenshots(page, "round-published")

    page.goto(f"{base}/console/rounds")
    assert_accessible(page)
    row = page.locator("tr", has_text="Round 1").inner_text()
    assert "published" in row and "v0 → v1" in row and "2 / 2" in row

    page.goto(f"{base}/console/models")
    assert_accessible(page)
    assert page.locator("figure.chart svg").count() >= 1  # a metric curve, drawn as SVG
    page.get_by_role("link", name="Promote v1").click()
    assert page.locator("h1").inner_text() == "Promote version 1 to production?"
    page.get_by_role("button", name="Promote").click()
    assert _flash(page) == "Version 1 is production."
    assert page.locator("tr", has_text="v1").first.locator("text=production").count() == 1
    screenshots(page, "models-promoted")
    assert hub.call("GET", "/api/v1/models/production")["version"] == 1

    page.get_by_role("link", name="Roll production back").click()
    page.get_by_role("button", name="Roll back").click()
    assert _flash(page) == "Rolled back: version 0 is production."
    assert hub.call("GET", "/api/v1/models/production")["version"] == 0

    page.goto(f"{base}/console/audit")
    assert_accessible(page)
    page.fill("#f-action", "model.rollback")
    page.press("#f-action", "Enter")
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    assert re.search(r"admin\s+model\.rollback\s+model:0", rows.inner_text())
    screenshots(page, "audit")
    audit = hub.call("GET", "/api/v1/audit", params={"actor": "admin"})
    actions = {event["action"] for event in audit}
    assert {"node.create", "round.open", "round.close", "model.promote", "model.rollback"} <= (
        actions
    )


def test_post_without_csrf_token_is_refused(hub, page) -> None:
    sign_in(page, hub.url, HUB_ADMIN)
    # The browser sends the session cookie (same site), but the form lacks the token.
    response = page.request.post(f"{hub.url}/console/nodes", form={"name": "forged"})
    assert response.status == 403
    forged = page.request.post(
        f"{hub.url}/console/nodes", form={"name": "forged", "csrf_token": "guess"}
    )
    assert forged.status == 403
    names = [node["name"] for node in hub.call("GET", "/api/v1/nodes")]
    assert "forged" not in names
