"""Predict studies from a real PACS (Orthanc + DICOMweb) and store the results back."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import highdicom as hd
import pydicom
import pytest

from services.inference_api.multipart_related import build_related, parse_related
from tests.integration.inference.helpers import client, make_settings, serve
from tests.support.orthanc import Orthanc, make_study, non_image_study, orthanc_server
from tests.support.processes import ThreadedServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    with orthanc_server() as server:
        yield server


@pytest.fixture(scope="module")
def pngs(site) -> list[bytes]:
    return [path.read_bytes() for path in site.image_paths[:3]]


@pytest.fixture(scope="module")
def api(tmp_path_factory, trained_store, orthanc) -> Iterator[ThreadedServer]:
    settings = make_settings(
        trained_store,
        tmp_path_factory.mktemp("dicomweb"),
        dicomweb_url=orthanc.dicomweb,
        dicomweb_username=orthanc.user,
        dicomweb_password=orthanc.password,
    )
    with serve(settings) as server:
        yield server


def _retrieve(orthanc: Orthanc, study: str, series: str) -> list[pydicom.Dataset]:
    with orthanc.client() as http:
        r = http.get(
            f"/dicom-web/studies/{study}/series/{series}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
    r.raise_for_status()
    parts = parse_related(r.headers["content-type"], r.content, max_parts=10, max_part_bytes=10**8)
    return [pydicom.dcmread(io.BytesIO(p.data)) for p in parts]


def test_a_study_is_predicted_by_uid_and_its_sr_read_back(api, orthanc, pngs):
    study = make_study(pngs)
    orthanc.upload(study.instances)
    with client(api) as http:
        r = http.post(
            "/predict/dicomweb",
            json={"study_instance_uid": study.study_uid, "store_sr": True, "fhir": True},
        )
        direct = http.post(
            "/predict/batch",
            files=[
                ("files", (f"{i}.dcm", d, "application/dicom"))
                for i, d in enumerate(study.instances)
            ],
        ).json()["predictions"]
    assert r.status_code == 200, r.text
    body = r.json()
    by_uid = {i["sop_instance_uid"]: i for i in body["instances"]}
    assert set(by_uid) == set(study.instance_uids)
    for uid, expected in zip(study.instance_uids, direct, strict=True):
        got = by_uid[uid]["prediction"]
        assert by_uid[uid]["status"] == "predicted"
        assert got["label"] == expected["label"]
        assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
    names = list(direct[0]["probabilities"])
    mean = {n: sum(p["probabilities"][n] for p in direct) / len(direct) for n in names}
    label = max(names, key=mean.__getitem__)
    assert body["study"]["label"] == label
    assert body["study"]["confidence"] == pytest.approx(mean[label], abs=1e-5)

    sr_uids = body["structured_report"]
    assert sr_uids["study_instance_uid"] == study.study_uid
    [stored] = _retrieve(orthanc, study.study_uid, sr_uids["series_instance_uid"])
    sr = hd.sr.srread(io.BytesIO(_dicom_bytes(stored)))
    assert sr.SOPInstanceUID == sr_uids["sop_instance_uid"]
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in sr.ContentSequence}
    assert "AI model" in items["Comment"].TextValue
    assert "global FAM v1, private head h1" in items["Comment"].TextValue
    assert items["Finding"].ConceptCodeSequence[0].CodeMeaning == label
    confidence = items["AI model confidence"].MeasuredValueSequence[0].NumericValue
    assert float(confidence) == pytest.approx(mean[label], abs=1e-4)
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study_ref in sr.CurrentRequestedProcedureEvidenceSequence
        for series_ref in study_ref.ReferencedSeriesSequence
        for ref in series_ref.ReferencedSOPSequence
    }
    assert evidence == set(study.instance_uids)

    fhir = body["fhir"]
    assert fhir["resourceType"] == "DiagnosticReport" and fhir["status"] == "preliminary"
    assert "AI model" in fhir["conclusion"] and label in fhir["conclusion"]
    assert len(fhir["contained"]) == 1 + len(study.instances)
    conclusion = fhir["contained"][0]
    assert conclusion["valueCodeableConcept"]["text"] == label
    assert conclusion["component"][0]["valueQuantity"]["value"] == pytest.approx(
        mean[label], abs=1e-4
    )

    # Predicting again skips the SR now in the study, and names it.
    with client(api) as http:
        again = http.post("/predict/dicomweb", json={"study_instance_uid": study.study_uid})
    assert again.status_code == 200
    skipped = [i for i in again.json()["instances"] if i["status"] == "skipped"]
    assert [i["sop_instance_uid"] for i in skipped] == [sr_uids["sop_instance_uid"]]
    assert "no pixel data" in skipped[0]["reason"]


def test_one_series_can_be_asked_for(api, orthanc, pngs):
    study = make_study(pngs[:2])
    orthanc.upload(study.instances)
    with client(api) as http:
        r = http.post(
            "/predict/dicomweb",
            json={"study_instance_uid": study.study_uid, "series_instance_uid": study.series_uid},
        )
        unknown_series = http.post(
            "/predict/dicomweb",
            json={"study_instance_uid": study.study_uid, "series_instance_uid": "1.2.3.4"},
        )
    assert r.status_code == 200 and len(r.json()["instances"]) == 2
    assert unknown_series.status_code == 404


def test_unknown_uid_non_image_and_bad_uid_are_4xx(api, orthanc):
    other = non_image_study()
    orthanc.upload(other.instances)
    with client(api) as http:
        unknown = http.post("/predict/dicomweb", json={"study_instance_uid": "1.2.3.999"})
        no_image = http.post("/predict/dicomweb", json={"study_instance_uid": other.study_uid})
        bad = http.post("/predict/dicomweb", json={"study_instance_uid": "1.2/../x"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_study"
    assert no_image.status_code == 422 and no_image.json()["code"] == "no_image_instances"
    assert bad.status_code == 422


def test_stow_style_upload_to_predict(api, orthanc, pngs):
    study = make_study(pngs[:2])
    content_type, body = build_related(study.instances)
    with client(api) as http:
        r = http.post("/predict/batch", content=body, headers={"Content-Type": content_type})
        wrong = http.post(
            "/predict/batch",
            content=body,
            headers={"Content-Type": content_type.replace("application/dicom", "image/png")},
        )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    assert wrong.status_code == 415


def _settings(tmp_path, trained_store, url: str, **extra):
    return make_settings(trained_store, tmp_path, dicomweb_url=url, **extra)


def test_pacs_down_wrong_password_and_slow_pacs(tmp_path, trained_store, orthanc):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        slow_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        closed.close()
        cases = [
            (down_url, {}, 502, "pacs_error"),
            (
                orthanc.dicomweb,
                {"dicomweb_username": orthanc.user, "dicomweb_password": "wrong"},
                502,
                "pacs_error",
            ),
            (slow_url, {"dicomweb_timeout_seconds": 0.5}, 504, "pacs_timeout"),
        ]
        for url, extra, status, code in cases:
            settings = _settings(tmp_path / code / str(status), trained_store, url, **extra)
            with serve(settings) as server, client(server) as http:
                r = http.post("/predict/dicomweb", json={"study_instance_uid": "1.2.3"})
            assert r.status_code == status, (url, r.text)
            assert r.json()["code"] == code


def test_without_a_pacs_there_is_no_dicomweb_route(tmp_path, trained_store):
    with serve(make_settings(trained_store, tmp_path)) as server, client(server) as http:
        r = http.post("/predict/dicomweb", json={"study_instance_uid": "1.2.3"})
        paths = http.get("/openapi.json").json()["paths"]
    assert r.status_code == 404 and "/predict/dicomweb" not in paths


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()
