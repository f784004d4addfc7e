"""Site monitoring on real models: embedding drift on synthetic sites, feedback metrics.

One synthetic federation of two hospitals with the same balanced class mix (so that only
their cameras differ); a model is trained on half of hospital 0's
images and stored with its training-feature sample, as a node does. Traffic is then the
other half of hospital 0 (in distribution), hospital 1 (another site's camera) or hospital
0 with its contrast reduced.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageEnhance

from fedmedclip.backbone import Backbone
from fedmedclip.data import ClassIndex, read_image_folder, synthesize_federation
from fedmedclip.model_store import ModelStore
from fedmedclip.schemas import TaskSpec
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import LoadedModel, ModelManager
from services.inference_api.monitoring import MonitorLimits, SiteMonitor
from services.inference_api.predictor import forward, prepare
from tests.integration.inference.helpers import (
    ADMIN,
    client,
    make_settings,
    metric_value,
    serve,
)
from tests.support.model_store import SiteData, publish_round

pytestmark = pytest.mark.slow

PER_HOSPITAL = 80
MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class Federation:
    store_root: Path
    held_out: list[bytes]  # hospital 0 images the model was not trained on
    other_site: list[bytes]  # hospital 1


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, backbone: Backbone) -> Federation:
    root = tmp_path_factory.mktemp("monitoring")
    summary = synthesize_federation(
        root / "images",
        hospitals=2,
        classes=3,
        per_hospital=PER_HOSPITAL,
        image_size=64,
        seed=1,
        alpha=100.0,
    )
    records = read_image_folder(summary.hospital_dirs[0])
    train, held_out = records[::2], records[1::2]
    index = ClassIndex(summary.class_names)
    pixels = torch.stack([prepare(r.path.read_bytes(), backbone, MAX_PIXELS) for r in train])
    site = SiteData(
        task=TaskSpec(class_names=summary.class_names, backbone=backbone.name),
        image_paths=[r.path for r in train],
        features=backbone.encode_tensors(pixels),
        labels=torch.tensor([index.index(r.label) for r in train]),
    )
    store = ModelStore(root / "store")
    publish_round(store, backbone, site, global_version=1, pairing=True)
    other = read_image_folder(summary.hospital_dirs[1])
    return Federation(
        store_root=store.root,
        held_out=[r.path.read_bytes() for r in held_out],
        other_site=[r.path.read_bytes() for r in other[: len(held_out)]],
    )


@pytest.fixture(scope="module")
def model(federation: Federation) -> LoadedModel:
    manager = ModelManager(
        ModelStore(federation.store_root), weights="none", device="cpu", metrics=InferenceMetrics()
    )
    loaded = manager.refresh()
    assert loaded is not None and loaded.reference_features is not None
    return loaded


def _drift_after(model: LoadedModel, images: list[bytes]) -> dict:
    monitor = SiteMonitor(MonitorLimits(), InferenceMetrics())
    pixels = [prepare(image, model.backbone, MAX_PIXELS) for image in images]
    monitor.observe(model, pixels, forward(model, torch.stack(pixels)))
    return monitor.report((model.global_version, model.head_version))


def _low_contrast(png: bytes) -> bytes:
    out = io.BytesIO()
    ImageEnhance.Contrast(Image.open(io.BytesIO(png)).convert("RGB")).enhance(0.4).save(
        out, format="PNG"
    )
    return out.getvalue()


def test_in_distribution_traffic_does_not_raise_drift(model, federation):
    report = _drift_after(model, federation.held_out)
    assert report["predictions"] == len(federation.held_out)
    assert report["drift"]["state"] == "ok", report["drift"]
    assert report["drift"]["mmd"] <= report["drift"]["threshold"]


def test_another_sites_images_raise_drift(model, federation):
    drift = _drift_after(model, federation.other_site)["drift"]
    assert drift["state"] == "drift", drift
    assert drift["p_value"] <= 0.01


def test_a_contrast_shift_raises_drift(model, federation):
    shifted = [_low_contrast(image) for image in federation.held_out]
    report = _drift_after(model, shifted)
    assert report["drift"]["state"] == "drift", report["drift"]
    plain = _drift_after(model, federation.held_out)
    assert report["input"]["std"]["mean"] < plain["input"]["std"]["mean"]


def test_too_few_images_give_no_verdict(model, federation):
    drift = _drift_after(model, federation.other_site[:5])["drift"]
    assert drift["state"] == "insufficient_data"


def test_histograms_and_prior_add_up(model, federation):
    report = _drift_after(model, federation.held_out)
    n = report["predictions"]
    for name in ("confidence", "entropy", "alpha"):
        assert sum(report["histograms"][name]["counts"]) == n
    assert sum(report["predicted_classes"].values()) == n
    prior = report["class_prior"]
    counts = model.class_counts
    assert prior["training"] == pytest.approx([c / sum(counts) for c in counts])
    expected = 0.5 * sum(
        abs(report["predicted_classes"][c] / n - p)
        for c, p in zip(model.class_names, prior["training"], strict=True)
    )
    assert prior["total_variation"] == pytest.approx(expected)


def _ece(confidences: list[float], correct: list[bool]) -> float:
    """ECE over ten bins (k/10, (k+1)/10], written out independently of the library."""
    total = 0.0
    for k in range(10):
        rows = [
            i
            for i, c in enumerate(confidences)
            if (k / 10 < c <= (k + 1) / 10) or (k == 0 and c == 0)
        ]
        if rows:
            hit = sum(correct[i] for i in rows) / len(rows)
            conf = sum(confidences[i] for i in rows) / len(rows)
            total += len(rows) / len(confidences) * abs(hit - conf)
    return total


def test_feedback_changes_the_running_metrics_as_computed_by_hand(tmp_path, federation):
    settings = make_settings(federation.store_root, tmp_path)
    with serve(settings) as server, client(server) as http:
        files = [
            ("files", (f"{i}.png", data, "image/png"))
            for i, data in enumerate(federation.held_out[:4])
        ]
        answers = http.post("/predict/batch", files=files).json()["predictions"]
        names = list(answers[0]["probabilities"])
        before = http.get("/monitoring").json()
        version = before["versions"][0]
        assert version["predictions"] == 4 and version["feedback"] == {"labelled": 0}
        assert before["serving"] == {"global_version": 1, "head_version": 1}

        # Confirm the first, third and fourth; the second was another class.
        wrong = next(n for n in names if n != answers[1]["label"])
        truth = [answers[0]["label"], wrong, answers[2]["label"], answers[3]["label"]]
        for answer, label in zip(answers, truth, strict=True):
            r = http.post(f"/predictions/{answer['id']}/feedback", json={"label": label})
            assert r.status_code == 200, r.text
            assert r.json()["correct"] is (label == answer["label"])

        got = http.get("/monitoring").json()["versions"][0]["feedback"]
        predicted = [a["label"] for a in answers]
        correct = [t == p for t, p in zip(truth, predicted, strict=True)]
        recalls = []
        for cls in set(truth):
            rows = [i for i, t in enumerate(truth) if t == cls]
            recalls.append(sum(correct[i] for i in rows) / len(rows))
        confidences = [a["probabilities"][a["label"]] for a in answers]
        assert got["labelled"] == 4
        assert got["accuracy"] == pytest.approx(0.75)
        assert got["balanced_accuracy"] == pytest.approx(sum(recalls) / len(recalls))
        assert got["ece"] == pytest.approx(_ece(confidences, correct))

        # A correction replaces the earlier feedback.
        http.post(f"/predictions/{answers[1]['id']}/feedback", json={"label": predicted[1]})
        assert http.get("/monitoring").json()["versions"][0]["feedback"]["accuracy"] == 1.0
        text = http.get("/metrics").text
        assert (
            metric_value(
                text,
                "fedmedclip_inference_feedback",
                global_version="1",
                head_version="1",
                metric="accuracy",
            )
            == 1.0
        )
        assert not math.isnan(
            metric_value(
                text, "fedmedclip_inference_drift_state", global_version="1", head_version="1"
            )
        )

        unknown = http.post(f"/predictions/{'0' * 32}/feedback", json={"label": names[0]})
        assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_prediction"
        bad = http.post(f"/predictions/{answers[0]['id']}/feedback", json={"label": "nope"})
        assert bad.status_code == 422 and bad.json()["code"] == "unknown_label"
        assert http.post("/predictions/x/feedback", json={"label": names[0]}).status_code == 422

    with serve(settings) as server:
        with client(server, ADMIN) as admin:
            assert admin.get("/monitoring").status_code == 200
            refused = admin.post(f"/predictions/{answers[0]['id']}/feedback", json={"label": "a"})
            assert refused.status_code == 403
        with client(server, None) as anonymous:
            assert anonymous.get("/monitoring").status_code == 401
