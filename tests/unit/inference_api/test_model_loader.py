"""The model manager builds the stored model, swaps it atomically and survives bad stores.

Uses a real backbone (random ViT-S-32) and a store written by the shared training code.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fedmedclip.backbone import cached_backbone
from fedmedclip.ensemble import Combination
from fedmedclip.heads import pairing_sample, refresh_head_statistics
from fedmedclip.model import SharedAdapter, build_head
from fedmedclip.model_store import HeadMetadata, ModelStore, encode_blob
from fedmedclip.schemas import TaskSpec
from services.inference_api.hub import HubFollower
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import ModelManager, ModelUnavailable
from services.inference_api.predictor import predict_bytes
from tests.support.model_store import build_model_store, publish_round, synthetic_site
from tests.support.processes import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backbone():
    return cached_backbone("ViT-S-32", "none", "cpu")


@pytest.fixture(scope="module")
def site(tmp_path_factory, backbone):
    return synthetic_site(tmp_path_factory.mktemp("site"), backbone, images=24)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, backbone, site):
    """One trained store (global v1, head 1); tests work on copies of it."""
    return build_model_store(tmp_path_factory.mktemp("store"), backbone, site).root


def _copy(trained, tmp_path) -> ModelStore:
    return ModelStore(shutil.copytree(trained, tmp_path / "store"))


def _manager(store: ModelStore) -> tuple[ModelManager, InferenceMetrics]:
    metrics = InferenceMetrics()
    return ModelManager(store, weights="none", device="cpu", metrics=metrics), metrics


def test_empty_store_is_unavailable_with_a_reason(tmp_path):
    manager, _ = _manager(ModelStore(tmp_path))
    assert manager.refresh() is None
    with pytest.raises(ModelUnavailable, match="no current.json"):
        manager.require()
    (tmp_path / "current.json").write_text(json.dumps({"global_version": 1, "head_version": None}))
    manager.refresh()
    with pytest.raises(ModelUnavailable, match="no private head"):
        manager.require()
    (tmp_path / "current.json").write_text("{not json")
    manager.refresh()
    with pytest.raises(ModelUnavailable, match="current.json"):
        manager.require()


def test_loads_the_current_model_and_swaps_to_a_new_one(tmp_path, backbone, site, trained):
    store = _copy(trained, tmp_path)
    manager, metrics = _manager(store)
    first = manager.refresh()
    assert first is manager.require()
    assert (first.global_version, first.head_version, first.head_trained_on) == (1, 1, 1)
    assert first.backbone is backbone and first.class_names == site.task.class_names
    assert first.global_sha256 == store.load_global(1).sha256
    assert first.temperatures.fam > 0 and first.temperatures.head > 0
    assert manager.refresh() is first  # nothing changed: no rebuild

    image = site.image_paths[0].read_bytes()
    before = predict_bytes(first, image, max_pixels=10**6)
    publish_round(store, backbone, site, global_version=2, seed=1)
    second = manager.refresh()
    assert (second.global_version, second.head_version) == (2, 2)
    assert manager.require() is second
    # Same backbone and classes: the text prototypes are reused, not recomputed.
    assert second.text_prototypes is first.text_prototypes
    # The old object still answers exactly as before (requests in flight keep it).
    again = predict_bytes(first, image, max_pixels=10**6)
    assert again.probabilities == pytest.approx(before.probabilities)
    assert metrics.global_version._value.get() == 2


def test_a_broken_new_model_keeps_the_old_one_in_service(tmp_path, backbone, trained):
    store = _copy(trained, tmp_path)
    manager, metrics = _manager(store)
    first = manager.refresh()
    store.set_current(1, 99)  # a head version that does not exist
    assert manager.refresh() is first
    assert metrics.reloads.labels("failed")._value.get() == 1
    manager.refresh()  # the same broken versions are not rebuilt at every poll
    assert metrics.reloads.labels("failed")._value.get() == 1
    manager.refresh(force=True)
    assert metrics.reloads.labels("failed")._value.get() == 2

    # A head for another task (4 classes instead of 3) does not fit global v1.
    other = TaskSpec(class_names=["a", "b", "c", "d"], backbone=backbone.name)
    head = build_head(other.adapter_config()).state_dict()
    bad_head = store.save_head(head, HeadMetadata(global_version=1))
    store.set_current(1, bad_head)
    assert manager.refresh() is first
    assert manager.require() is first


def test_a_head_with_invalid_temperatures_is_not_served(tmp_path, trained):
    store = _copy(trained, tmp_path)
    manager, metrics = _manager(store)
    first = manager.refresh()
    # Written by hand, as an old or damaged node could have: a negative temperature.
    meta = {"global_version": 1, "temperatures": {"fam": -1.0, "head": 1.0}, "version": 2}
    blob = encode_blob(store.load_head(1).tensors, meta)
    (store.root / "heads" / "h000002.safetensors").write_bytes(blob)
    store.set_current(1, 2)
    assert manager.refresh() is first
    assert metrics.reloads.labels("failed")._value.get() == 1


def test_a_broken_first_model_explains_itself(tmp_path, trained):
    store = _copy(trained, tmp_path)
    store.set_current(7, 1)  # no global v7
    manager, _ = _manager(store)
    assert manager.refresh() is None
    with pytest.raises(ModelUnavailable, match="global model version 7"):
        manager.require()


def test_the_forward_pass_is_a_probability_distribution(tmp_path, site, trained):
    manager, _ = _manager(_copy(trained, tmp_path))
    model = manager.refresh()
    prediction = predict_bytes(model, site.image_paths[3].read_bytes(), max_pixels=10**6)
    for probabilities in (
        prediction.probabilities,
        prediction.fam.probabilities,
        prediction.head.probabilities,
    ):
        assert list(probabilities) == site.task.class_names
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert 0.0 <= prediction.alpha <= 1.0
    expected = torch.tensor(list(prediction.probabilities.values()))
    mixed = (1 - prediction.alpha) * torch.tensor(list(prediction.fam.probabilities.values()))
    mixed += prediction.alpha * torch.tensor(list(prediction.head.probabilities.values()))
    assert torch.allclose(expected, mixed, atol=1e-5)


def test_an_unreachable_hub_falls_back_to_the_store(tmp_path, trained):
    store = _copy(trained, tmp_path)
    hub = HubFollower(f"http://127.0.0.1:{free_port()}", "node-token", store, timeout=2)
    metrics = InferenceMetrics()
    manager = ModelManager(store, weights="none", device="cpu", metrics=metrics, hub=hub)
    try:
        model = manager.refresh()
    finally:
        hub.close()
    assert (model.global_version, model.head_version) == (1, 1)
    assert hub.production is None


def test_a_head_with_pairing_features_is_repaired_under_the_served_fam(tmp_path, site, trained):
    store = _copy(trained, tmp_path)
    stored = store.load_head(1)
    features = pairing_sample(site.features)
    paired = store.save_head(stored.tensors, stored.meta, pairing_features=features)
    store.set_current(1, paired)
    model = _manager(store)[0].refresh()
    assert model.head_repaired and model.describe()["head_statistics_repaired"] is True

    config = site.task.adapter_config()
    adapter, head = SharedAdapter(config), build_head(config)
    adapter.load_state_dict(store.load_global(1).tensors)
    head.load_state_dict(stored.tensors)
    refresh_head_statistics(adapter, head, features)
    served = model.head.state_dict()
    assert all(torch.allclose(served[k], v) for k, v in head.state_dict().items())
    means = [k for k in stored.tensors if k.endswith("running_mean")]
    assert means and any(not torch.allclose(served[k], stored.tensors[k]) for k in means)

    store.set_current(1, 1)  # the same head without features is served as stored
    plain = _manager(store)[0].refresh()
    assert not plain.head_repaired
    assert all(torch.equal(plain.head.state_dict()[k], stored.tensors[k]) for k in means)


def test_the_predictor_applies_the_heads_recorded_combination(tmp_path, site, trained):
    store = _copy(trained, tmp_path)
    stored = store.load_head(1)
    assert stored.meta.combination == Combination()  # a head from before the choice existed
    image = site.image_paths[5].read_bytes()
    old = _manager(store)[0].refresh()
    assert old.describe()["combination"] == {"kind": "entropy", "head_weight": None}

    for recorded, alpha in (
        ({"kind": "head"}, 1.0),
        ({"kind": "fam"}, 0.0),
        ({"kind": "weighted", "head_weight": 0.3}, 0.3),
    ):
        meta = stored.meta.model_copy(update={"combination": Combination(**recorded)})
        version = store.save_head(stored.tensors, meta)
        store.set_current(1, version)
        model = _manager(store)[0].refresh()
        assert model.combination.kind == recorded["kind"]
        prediction = predict_bytes(model, image, max_pixels=10**6)
        assert prediction.alpha == pytest.approx(alpha)
        fam = torch.tensor(list(prediction.fam.probabilities.values()))
        head = torch.tensor(list(prediction.head.probabilities.values()))
        expected = (1 - alpha) * fam + alpha * head
        assert torch.allclose(torch.tensor(list(prediction.probabilities.values())), expected)

    # The local head: served from the head's own tensors, on the version-0 FAM.
    config = TaskSpec.model_validate(store.load_global(1).meta["task"]).adapter_config()
    local_head = build_head(config, seed=7)
    local_tensors = {f"local.{k}": v for k, v in local_head.state_dict().items()}
    meta = stored.meta.model_copy(update={"combination": Combination(kind="local")})
    store.set_current(1, store.save_head(stored.tensors | local_tensors, meta))
    model = _manager(store)[0].refresh()
    assert model is not None and model.local is not None
    prediction = predict_bytes(model, image, max_pixels=10**6)
    assert prediction.local is not None
    assert prediction.probabilities == pytest.approx(prediction.local.probabilities)
    assert prediction.probabilities != pytest.approx(prediction.head.probabilities)
    # A head recording 'local' without a local head is refused, not served half-way.
    store.set_current(1, store.save_head(stored.tensors, meta))
    manager, _ = _manager(store)
    assert manager.refresh() is None
    with pytest.raises(ModelUnavailable, match="no local head"):
        manager.require()

    # A statistics combination with a global model whose statistics are unusable (here
    # zeroed: unavailable) is refused the same way.
    served = store.load_global(1)
    zeroed = {
        k: torch.zeros_like(v) if k.startswith("class_stats.") else v
        for k, v in served.tensors.items()
    }
    store.save_global_blob(2, encode_blob(zeroed, served.meta | {"version": 2}))
    meta = stored.meta.model_copy(update={"combination": Combination(kind="statistics")})
    store.set_current(1, store.save_head(stored.tensors, meta))
    assert _manager(store)[0].refresh() is not None  # v1's statistics serve it
    store.set_current(2, store.save_head(stored.tensors, meta))
    manager, _ = _manager(store)
    assert manager.refresh() is None
    with pytest.raises(ModelUnavailable, match="no usable class statistics"):
        manager.require()

    # Written by hand, as a damaged node could have: a combination this code does not know.
    raw = stored.meta.model_dump(mode="json") | {"combination": {"kind": "vote"}}
    broken = max(store.head_versions()) + 1
    raw["version"] = broken
    blob = encode_blob(stored.tensors, raw)
    (store.root / "heads" / f"h{broken:06d}.safetensors").write_bytes(blob)
    store.set_current(1, broken)
    manager, _ = _manager(store)
    assert manager.refresh() is None
    with pytest.raises(ModelUnavailable, match="combination"):
        manager.require()
