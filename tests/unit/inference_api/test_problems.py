"""The inference API's own refusals, its upload caps, and how it counts them (what every
service answers alike is in ``tests/unit/test_problem_details.py``); no model is loaded, so
no backbone either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.inference_api.app import create_app
from services.inference_api.uploads import body_limit
from tests.support.problems import (
    CLINICIAN,
    INFERENCE_ADMIN,
    INFERENCE_MAX_FILES,
    INFERENCE_MAX_UPLOAD,
    assert_problem,
    chunked,
    inference_settings,
    serve,
)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with serve(create_app(inference_settings(tmp_path))) as client:
        yield client


def _errors(api: TestClient, code: str) -> float:
    sample = f'fedmedclip_inference_errors_total{{kind="{code}"}} '
    lines = [line for line in api.get("/metrics").text.splitlines() if line.startswith(sample)]
    return float(lines[0].rpartition(" ")[2]) if lines else 0.0


def test_refusals_have_stable_codes_and_are_counted(api: TestClient) -> None:
    image = {"file": ("x.png", b"\x89PNG\r\n\x1a\n")}
    assert_problem(api.post("/predict", files=image), 401, "unauthenticated")
    assert_problem(api.post("/predict", files=image, headers=INFERENCE_ADMIN), 403, "forbidden")
    assert_problem(
        api.post("/predict", json={"file": "x"}, headers=CLINICIAN), 415, "unsupported_media_type"
    )
    missing = api.post("/predict", files={"other": ("x.png", b"x")}, headers=CLINICIAN)
    assert "'file' is required" in assert_problem(missing, 422, "invalid_request")["detail"]
    no_model = api.post("/predict", files=image, headers=CLINICIAN)
    assert "no model loaded yet" in assert_problem(no_model, 503, "no_model")["detail"]
    assert no_model.headers["retry-after"] == "10"
    assert_problem(api.get("/model", headers=CLINICIAN), 503, "no_model")
    assert "kaboom" not in assert_problem(api.get("/boom"), 500, "internal")["detail"]
    for code, times in [("unauthenticated", 1), ("forbidden", 1), ("no_model", 2), ("internal", 1)]:
        assert _errors(api, code) == times, code


@pytest.mark.parametrize(
    ("path", "field", "files"),
    [("/predict", "file", 1), ("/predict/batch", "files", INFERENCE_MAX_FILES)],
)
def test_uploads_are_capped_declared_or_chunked(api: TestClient, path, field, files) -> None:
    limit = body_limit(files, INFERENCE_MAX_UPLOAD)
    head = (
        f'--xyz\r\nContent-Disposition: form-data; name="{field}"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    multipart = {**CLINICIAN, "Content-Type": "multipart/form-data; boundary=xyz"}
    for body in (head + b"\0" * limit, chunked(limit, size=8192, head=head)):
        refused = api.post(path, content=body, headers=multipart)
        detail = assert_problem(refused, 413, "too_large")["detail"]
        assert detail == f"request body is larger than the limit of {limit} bytes"
    one_file_too_big = api.post(
        path, files={field: ("big.png", b"\0" * (INFERENCE_MAX_UPLOAD + 1))}, headers=CLINICIAN
    )
    assert "cap per file" in assert_problem(one_file_too_big, 413, "too_large")["detail"]
    assert _errors(api, "too_large") == 3
