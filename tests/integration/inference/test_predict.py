"""POST /predict end to end over HTTP (uvicorn), with a store written by the training code."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from fedmedclip.model_store import ModelStore
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import ModelManager
from services.inference_api.predictor import predict_bytes
from tests.integration.inference.helpers import (
    ADMIN,
    CLINICIAN,
    bomb_png,
    client,
    ct_small_dicom,
    jpeg_from,
    make_settings,
    metric_value,
    serve,
    unsupported_transfer_syntax_dicom,
)

pytestmark = pytest.mark.integration

MAX_UPLOAD = 1_000_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_store):
    root = tmp_path_factory.mktemp("predict")
    shutil.copytree(trained_store, root / "store")
    return root


@pytest.fixture(scope="module")
def server(workdir):
    settings = make_settings(
        workdir / "store", workdir, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS
    )
    with serve(settings) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with client(server) as c:
        yield c


@pytest.fixture(scope="module")
def png(site) -> bytes:
    return site.image_paths[0].read_bytes()


def _check_prediction(body: dict, class_names: list[str]) -> None:
    assert list(body["probabilities"]) == class_names
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert 0.0 <= body["alpha"] <= 1.0
    # The task has class statistics (the default), filled by the site's round.
    assert set(body["branches"]) == {"fam", "head", "statistics"}
    for branch in body["branches"].values():
        assert list(branch["probabilities"]) == class_names
        assert sum(branch["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert branch["label"] in class_names
    assert body["model"] == {
        "global_version": 1,
        "head_version": 1,
        "backbone": "ViT-S-32",
        "weights": "random",
    }
    assert body["latency_ms"] > 0


def test_png_prediction_has_the_ensemble_branches_and_store_versions(http, png, site, workdir):
    response = http.post("/predict", files={"file": ("lesion.png", png, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    _check_prediction(body, site.task.class_names)
    assert body["input_sha256"] == hashlib.sha256(png).hexdigest()
    # Same answer as the bare in-process path with the same stored model.
    manager = ModelManager(
        ModelStore(workdir / "store"), weights="none", device="cpu", metrics=InferenceMetrics()
    )
    expected = predict_bytes(manager.refresh(), png, max_pixels=MAX_PIXELS)
    assert body["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)
    assert body["alpha"] == pytest.approx(expected.alpha, abs=1e-5)


def test_every_prediction_is_audited_without_the_token(http, png, workdir):
    request_id = "audit-check-1"
    response = http.post(
        "/predict", files={"file": ("x.png", png)}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    audit = (workdir / "audit" / "audit.jsonl").read_text()
    assert CLINICIAN not in audit
    entry = next(json.loads(x) for x in audit.splitlines() if request_id in x)
    assert entry["input_sha256"] == hashlib.sha256(png).hexdigest()
    assert entry["caller"].startswith("tok-")
    assert entry["model"]["global_version"] == 1 and entry["model"]["head_version"] == 1
    assert entry["model"]["global_sha256"] == ModelStore(workdir / "store").load_global(1).sha256
    assert entry["label"] == response.json()["label"]
    assert not (workdir / "audit" / "images").exists()


def test_jpeg_and_dicom_predict(http, png, site):
    for name, data in [("x.jpg", jpeg_from(png)), ("CT_small.dcm", ct_small_dicom())]:
        response = http.post("/predict", files={"file": (name, data)})
        assert response.status_code == 200, (name, response.text)
        _check_prediction(response.json(), site.task.class_names)


def test_batch_answers_in_order_and_matches_single_predictions(http, site):
    images = [p.read_bytes() for p in site.image_paths[:3]] + [ct_small_dicom()]
    files = [("files", (f"{i}.img", data)) for i, data in enumerate(images)]
    response = http.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["input_sha256"] for p in body["predictions"]] == [
        hashlib.sha256(d).hexdigest() for d in images
    ]
    assert body["model"]["global_version"] == 1
    for data, batched in zip(images, body["predictions"], strict=True):
        _check_prediction(batched, site.task.class_names)
        single = http.post("/predict", files={"file": ("x", data)}).json()
        assert batched["probabilities"] == pytest.approx(single["probabilities"], abs=1e-4)


@pytest.mark.parametrize(
    ("make", "status", "message"),
    [
        (lambda png: b"", 422, "empty file"),
        (lambda png: b"%PDF-1.7 this is not an image at all", 422, "not a PNG, JPEG or DICOM"),
        (lambda png: png[: len(png) // 2], 422, "truncated or corrupt"),
        (lambda png: bomb_png(), 422, "too large to decode safely"),
        (lambda png: bomb_png(2100, 2000), 422, f"cap of {MAX_PIXELS}"),
        (lambda png: bomb_png(10_000, 1), 422, "10000 x 1 pixels, thinner than the 1:20 aspect"),
        (lambda png: bomb_png(1, 3_000_000), 422, "thinner than the 1:20 aspect ratio"),
        (lambda png: unsupported_transfer_syntax_dicom(), 422, "transfer syntax"),
        (lambda png: b"\0" * (MAX_UPLOAD + 1), 413, "cap"),
    ],
    ids=[
        "empty",
        "not-image",
        "truncated",
        "bomb",
        "over-pixel-cap",
        "thin-wide",
        "thin-tall",
        "dicom-mpeg2",
        "too-big",
    ],
)
def test_bad_images_get_a_4xx_that_names_the_problem(http, png, make, status, message):
    response = http.post("/predict", files={"file": ("upload", make(png))})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail
    assert "<PIL." not in detail and "b'" not in detail  # no Python object reprs


def test_an_oversized_stream_is_cut_off_while_reading(http):
    """A chunked upload without Content-Length is refused once it passes the cap."""

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        for _ in range(200):  # up to 20 MB, far past the 1 MB cap
            yield b"\0" * 100_000
        yield b"\r\n--b--\r\n"

    response = http.post(
        "/predict",
        content=body(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "larger than the limit of" in response.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": {"image": ("x.png", b"123")}}, 422, "field 'file' is required"),
        ({"data": {"file": "just text"}, "files": {"other": ("x", b"1")}}, 422, "must be a file"),
        ({"json": {"file": "abc"}}, 415, "multipart/form-data"),
        (
            {"files": [("file", ("a.png", b"1")), ("file", ("b.png", b"2"))]},
            400,
            "Too many files",
        ),
        (
            {"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "malformed multipart",
        ),
    ],
    ids=["no-file-field", "text-field", "json", "two-files", "no-boundary"],
)
def test_malformed_requests_get_a_4xx_with_a_message(http, kwargs, status, message):
    response = http.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_a_bad_file_in_a_batch_is_named_and_nothing_is_predicted(http, png, workdir):
    before = (workdir / "audit" / "audit.jsonl").read_text().count("\n")
    files = [("files", ("good.png", png)), ("files", ("broken.png", png[:100]))]
    response = http.post("/predict/batch", files=files)
    assert response.status_code == 422
    assert "file 2 ('broken.png')" in response.json()["detail"]
    assert (workdir / "audit" / "audit.jsonl").read_text().count("\n") == before


def test_tokens_and_roles(server, png):
    files = {"file": ("x.png", png)}
    with client(server, token=None) as anonymous:
        response = anonymous.post("/predict", files=files)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "missing" in response.json()["detail"]
        basic = anonymous.post("/predict", files=files, headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401 and "Bearer" in basic.json()["detail"]
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/ready").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
    with client(server, token="not-a-known-token") as stranger:
        assert stranger.post("/predict", files=files).status_code == 401
        assert stranger.get("/model").status_code == 401
    with client(server, token=ADMIN) as admin:
        refused = admin.post("/predict", files=files)
        assert refused.status_code == 403 and "clinician" in refused.json()["detail"]
        assert admin.get("/model").status_code == 200
        reloaded = admin.post("/model/reload")
        assert reloaded.status_code == 200 and reloaded.json()["global_version"] == 1
    with client(server) as clinician:
        assert clinician.post("/model/reload").status_code == 403


def test_model_endpoint_traces_the_artefacts(http, site, workdir):
    body = http.get("/model").json()
    stored = ModelStore(workdir / "store")
    assert body["global_version"] == 1 and body["head_version"] == 1
    assert body["global_sha256"] == stored.load_global(1).sha256
    assert body["head_sha256"] == stored.load_head(1).sha256
    assert body["class_names"] == site.task.class_names
    assert body["backbone"] == "ViT-S-32" and body["weights"] == "random"


def test_metrics_count_requests_errors_and_batches(http, png):
    http.post("/predict", files={"file": ("x", b"")})
    http.post("/predict", files={"file": ("x", png)})
    text = http.get("/metrics").text
    ok = metric_value(
        text, "fedmedclip_inference_requests_total", route="/predict", method="POST", status="200"
    )
    assert ok >= 1
    assert metric_value(text, "fedmedclip_inference_errors_total", kind="bad_image") >= 1
    assert metric_value(text, "fedmedclip_inference_batch_size_count") >= 1
    assert metric_value(text, "fedmedclip_inference_request_seconds_count", route="/predict") >= 2
    assert metric_value(text, "fedmedclip_inference_global_version") == 1


def test_openapi_documents_the_multipart_uploads(http):
    paths = http.get("/openapi.json").json()["paths"]
    for path, field in (("/predict", "file"), ("/predict/batch", "files")):
        body = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert body["schema"]["required"] == [field]
        assert paths[path]["post"]["responses"]["503"]
