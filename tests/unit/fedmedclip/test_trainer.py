"""Local training, model store round trips, and the feature cache."""

import numpy as np
import pytest
import torch
from PIL import Image

from fedmedclip.feature_cache import FeatureCache
from fedmedclip.model import AdapterConfig, adapter_state, build_adapter, build_head
from fedmedclip.model_store import ModelBlobError, ModelStore, decode_blob, encode_blob
from fedmedclip.trainer import TrainConfig, calibrate, pairing_sample, predict, train_local

CONFIG = AdapterConfig(dim=32, n_classes=3)


def _separable(n: int = 120, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 32, generator=g)
    labels = torch.arange(n) % 3
    feats = centres[labels] + 0.3 * torch.randn(n, 32, generator=g)
    text = torch.randn(3, 32, generator=g)
    return feats, labels, text


def test_training_learns_and_is_deterministic():
    feats, labels, text = _separable()
    results = []
    for _ in range(2):
        adapter, head = build_adapter(CONFIG), build_head(CONFIG)
        res = train_local(adapter, head, feats, labels, text, TrainConfig(epochs=15, lr=3e-3))
        results.append(res)
    a, b = results
    for k in a.adapter_state:
        assert torch.equal(a.adapter_state[k], b.adapter_state[k]), k
    assert a.epoch_losses[-1] < a.epoch_losses[0]
    assert set(a.adapter_state) == set(adapter_state(build_adapter(CONFIG)))
    assert not any(k.startswith("blocks") for k in a.adapter_state)
    head.load_state_dict(a.head_state)
    adapter.load_state_dict(a.adapter_state)
    temps = calibrate(adapter, head, feats, labels, text)
    out = predict(adapter, head, feats, text, temps)
    accuracy = (out.probabilities.argmax(-1) == labels).float().mean()
    assert accuracy > 0.9


def test_progress_is_reported_per_epoch():
    feats, labels, text = _separable(30)
    seen = []
    train_local(
        build_adapter(CONFIG),
        build_head(CONFIG),
        feats,
        labels,
        text,
        TrainConfig(epochs=3),
        progress=lambda e, total, loss: seen.append((e, total)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_model_store_round_trip(tmp_path):
    store = ModelStore(tmp_path)
    assert store.current() is None
    state = adapter_state(build_adapter(CONFIG))
    blob = encode_blob(state, {"version": 4, "task": {"class_names": ["a", "b", "c"]}})
    store.save_global_blob(4, blob)
    loaded = store.load_global(4)
    assert loaded.meta["version"] == 4
    assert all(torch.equal(loaded.tensors[k], state[k]) for k in state)
    head = build_head(CONFIG).state_dict()
    assert store.save_head(head, {"global_version": 4}) == 1
    assert store.save_head(head, {"global_version": 4}) == 2
    store.set_current(4, 2)
    assert store.current().head_version == 2
    assert store.load_head(2).meta["version"] == 2
    with pytest.raises(ModelBlobError):
        decode_blob(b"not safetensors at all")


def test_heads_keep_their_pairing_features(tmp_path):
    store = ModelStore(tmp_path)
    head = build_head(CONFIG).state_dict()
    features, _, _ = _separable(n=50)
    sample = pairing_sample(features, limit=20, seed=3)
    assert sample.shape == (20, 32)
    assert torch.equal(sample, pairing_sample(features, limit=20, seed=3))
    assert {tuple(r) for r in sample.tolist()} <= {tuple(r) for r in features.tolist()}
    assert torch.equal(pairing_sample(features, limit=100), features)
    with_features = store.save_head(head, {"global_version": 1}, pairing_features=sample)
    without = store.save_head(head, {"global_version": 1})
    assert torch.equal(store.load_pairing_features(with_features), sample)
    assert store.load_pairing_features(without) is None
    assert store.head_versions() == [1, 2]  # the features file is not a head


def test_feature_cache_encodes_each_image_once(tmp_path):
    from fedmedclip.backbone import load_backbone

    paths = []
    rng = np.random.default_rng(0)
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    backbone = load_backbone("ViT-S-32", None)
    cache = FeatureCache(tmp_path / "cache")
    first = cache.encode_files(backbone, paths, batch_size=2)
    assert backbone.encoded_images == 5 and cache.misses == 5
    second = cache.encode_files(backbone, paths)
    assert backbone.encoded_images == 5, "a second pass must not call the encoder"
    assert cache.hits == 5
    assert torch.allclose(first, second)
    assert torch.allclose(first.norm(dim=-1), torch.ones(5), atol=1e-5)
