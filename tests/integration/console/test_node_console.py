"""The hospital node console in a real browser: datasets with their validation report, a
job followed live to the end, the privacy budget and the model the site serves."""

from __future__ import annotations

import pytest

from tests.integration.console.browser import assert_accessible, sign_in
from tests.integration.node.conftest import FAST_HINTS, SITE_ADMIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_datasets_jobs_privacy_and_model(
    hub, federation, make_settings, run_node, page, screenshots
) -> None:
    node = run_node(make_settings("site-c"))
    base = node.url
    sign_in(page, base, SITE_ADMIN)
    assert_accessible(page)
    assert page.locator("#served-global").inner_text() == "none yet"
    assert "Epsilon spent" in page.locator("main").inner_text()

    page.goto(f"{base}/console/datasets")
    assert_accessible(page)
    page.fill("#ds-path", "/etc")
    page.press("#ds-path", "Enter")
    error = page.locator("p.flash.error").inner_text()
    assert "outside the data roots" in error  # the API's own refusal, shown on the page

    page.fill("#ds-path", str(federation.hospital_dirs[0]))
    page.fill("#ds-name", "dermatology")
    page.press("#ds-name", "Enter")
    assert page.locator("p.flash.ok").inner_text() == "Dataset dermatology registered: 40 images."
    page.get_by_text("Validation report").click()
    assert page.locator("section", has_text="dermatology").locator("table").is_visible()
    assert_accessible(page)
    screenshots(page, "datasets")

    hub.open_round(min_clients=1, hints=FAST_HINTS)
    page.goto(f"{base}/console/jobs")
    page.press("#job-round", "Enter")  # empty round: the hub's open round
    assert page.locator("p.flash.ok").inner_text() == "Job 1 queued for round 1."
    # The table polls while the job is live and stops once it is done.
    page.wait_for_function(
        "() => document.querySelector('#jobs-table td.state').innerText === 'done'",
        timeout=180_000,
    )
    row = page.locator("#jobs-table tbody tr").first.inner_text()
    assert "100%" in row and "test_accuracy" in row
    assert_accessible(page)
    screenshots(page, "jobs")

    page.goto(f"{base}/console/")
    assert page.locator("dd", has_text="v1").count() >= 1  # the private head it serves
    screenshots(page, "overview")
    assert node.http.get("/api/v1/model").json()["head_version"] == 1


def test_node_console_refuses_wrong_credential_and_missing_csrf(
    make_settings, run_node, page
) -> None:
    node = run_node(make_settings("site-d"))
    page.goto(f"{node.url}/console/signin")
    page.fill("#token", "wrong")
    page.press("#token", "Enter")
    assert page.locator("p.flash.error").is_visible()
    sign_in(page, node.url, SITE_ADMIN)
    response = page.request.post(f"{node.url}/console/jobs", form={"round_id": "1"})
    assert response.status == 403
    assert node.http.get("/api/v1/jobs").json() == []
