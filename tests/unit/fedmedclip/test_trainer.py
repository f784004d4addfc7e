"""Local training: learning, determinism, progress reports."""

import torch

from fedmedclip.model import AdapterConfig, adapter_state, build_adapter, build_head
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


def test_pairing_sample_is_a_deterministic_subset_of_the_features():
    features, _, _ = _separable(n=50)
    sample = pairing_sample(features, limit=20, seed=3)
    assert sample.shape == (20, 32)
    assert torch.equal(sample, pairing_sample(features, limit=20, seed=3))
    assert {tuple(r) for r in sample.tolist()} <= {tuple(r) for r in features.tolist()}
    assert torch.equal(pairing_sample(features, limit=100), features)
