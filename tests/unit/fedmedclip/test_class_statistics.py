"""Federated class statistics: exact pooling through the hub's mean, the discriminant, a
rare class learnt from the other sites, and what is (not) sent under DP or over the wire."""

import torch
from torch.nn import functional as F

from fedmedclip.aggregation import aggregate
from fedmedclip.class_statistics import ABSENT_LOGIT, ClassStatistics, drop_statistics
from fedmedclip.codec import apply_delta, decode_update, encode_update, state_delta
from fedmedclip.model import (
    AdapterConfig,
    SharedAdapter,
    build_adapter,
    build_head,
    expected_shapes,
)
from fedmedclip.prediction import choose, predict, statistics_logits
from fedmedclip.privacy import DPConfig, privatize_delta
from fedmedclip.training import TrainConfig, train_local

DIM, CLASSES = 16, 3


def _gaussian_site(
    counts: list[int], seed: int, shift: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of three well separated classes (class c along axis c), plus a site shift."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    means = 3.0 * torch.eye(CLASSES, DIM)
    x = means[labels] + torch.randn(len(labels), DIM, generator=generator) + shift
    return x, labels


def _filled(x: torch.Tensor, y: torch.Tensor) -> ClassStatistics:
    stats = ClassStatistics(DIM, CLASSES)
    stats.fill(x, y)
    return stats


def test_the_hubs_sample_weighted_mean_pools_the_statistics_exactly() -> None:
    sites = [_gaussian_site([30, 5, 0], 1), _gaussian_site([2, 20, 40], 2)]
    updates = [
        ({k: v.clone() for k, v in _filled(x, y).state_dict().items()}, float(len(y)))
        for x, y in sites
    ]
    pooled = _filled(torch.cat([x for x, _ in sites]), torch.cat([y for _, y in sites]))
    mean = aggregate(updates)
    for name, value in pooled.state_dict().items():
        assert torch.allclose(mean[name], value, atol=1e-5), name


def test_the_discriminant_is_lda_with_equal_priors() -> None:
    x, y = _gaussian_site([40, 40, 40], 3)
    stats = _filled(x, y)
    logits = stats.logits(x)
    assert logits is not None
    assert (logits.argmax(1) == y).float().mean() > 0.95
    # Scores differ between classes by a linear function of x: LDA, not a quadratic rule.
    diffs = logits[:, 1] - logits[:, 0]
    design = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    solution = torch.linalg.lstsq(design, diffs.double().unsqueeze(1)).solution
    assert torch.allclose(design @ solution, diffs.double().unsqueeze(1), atol=1e-2)


def test_statistics_are_unavailable_until_filled_and_absent_classes_are_never_predicted() -> None:
    stats = ClassStatistics(DIM, CLASSES)
    assert stats.logits(torch.randn(4, DIM)) is None
    x, y = _gaussian_site([20, 20, 0], 4)
    logits = _filled(x, y).logits(x)
    assert logits is not None
    assert torch.all(logits[:, 2] == ABSENT_LOGIT)
    assert set(logits.argmax(1).tolist()) <= {0, 1}


def test_a_site_recognises_a_class_it_has_almost_never_seen() -> None:
    """The payoff of sharing: site 0 holds 2 images of class 2, site 1 holds 60. After one
    federated round site 0's statistics branch finds class 2 on held-out images, which its
    head, trained on its own data, cannot."""
    config = AdapterConfig(dim=DIM, n_classes=CLASSES, class_statistics=True)
    text = F.normalize(
        torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    base = build_adapter(config).state_dict()
    counts = [[60, 60, 2], [60, 60, 60]]
    data = [_gaussian_site(c, 10 + i, shift=0.5 * i) for i, c in enumerate(counts)]
    heads = [build_head(config, seed=i) for i in range(2)]
    updates = []
    for (x, y), head in zip(data, heads, strict=True):
        adapter = build_adapter(config)
        result = train_local(adapter, head, x, y, text, TrainConfig(epochs=5, prune_weight=0.0))
        updates.append((state_delta(result.adapter_state, base), float(result.n_samples)))
    global_adapter = SharedAdapter(config)
    global_adapter.load_state_dict(apply_delta(base, aggregate(updates)))
    test_x, test_y = _gaussian_site([0, 0, 50], 99)
    rare_by_statistics = statistics_logits(global_adapter, heads[0], test_x)
    assert rare_by_statistics is not None
    recall_statistics = (rare_by_statistics.argmax(1) == 2).float().mean()
    head_only = predict(global_adapter, heads[0], test_x, text).head_probabilities
    recall_head = (head_only.argmax(1) == 2).float().mean()
    assert recall_statistics > 0.8
    assert recall_statistics > recall_head + 0.3
    # And site 0 chooses that branch on a validation split holding the rare class.
    val_x, val_y = _gaussian_site([10, 10, 10], 7)
    chosen = choose(global_adapter, heads[0], val_x, val_y, text).combination
    assert chosen.uses_statistics


def test_statistics_are_zero_under_dp_and_carry_no_noise() -> None:
    config = AdapterConfig(dim=DIM, n_classes=CLASSES, class_statistics=True)
    adapter = build_adapter(config)
    adapter.class_stats.fill(*_gaussian_site([10, 10, 10], 5))
    delta = {k: v.clone() for k, v in adapter.state_dict().items()}
    noisy = privatize_delta(delta, DPConfig(clip_norm=1.0, noise_multiplier=1.0))
    assert all(not noisy[k].any() for k in noisy if k.startswith("class_stats."))
    assert noisy["fam.l1.weight"].abs().sum() > 0  # the trained tensors are noised
    assert all(not v.any() for k, v in drop_statistics(delta).items() if "class_stats" in k)


def test_an_int4_update_carries_the_statistics_at_int8() -> None:
    config = AdapterConfig(dim=DIM, n_classes=CLASSES, class_statistics=True)
    adapter = build_adapter(config)
    adapter.class_stats.fill(*_gaussian_site([10, 10, 10], 6))
    delta = {k: v.clone() for k, v in adapter.state_dict().items()}
    payload = encode_update(delta, base_version=0, quantization="int4")
    decoded = decode_update(payload, expected_shapes=expected_shapes(config)).delta
    moment = delta["class_stats.moment"]
    error = (decoded["class_stats.moment"] - moment).abs().max()
    # Half an int8 step of the largest row; int4 would allow 127/7 times more.
    assert error <= moment.abs().max() / 254 + 1e-6
    fam_error = (decoded["fam.l1.weight"] - delta["fam.l1.weight"]).abs().max()
    assert fam_error > delta["fam.l1.weight"].abs().max() / 254  # the FAM stays at int4


def test_a_global_model_without_statistics_loads_them_as_unavailable() -> None:
    old = build_adapter(AdapterConfig(dim=DIM, n_classes=CLASSES)).state_dict()
    adapter = SharedAdapter(AdapterConfig(dim=DIM, n_classes=CLASSES, class_statistics=True))
    adapter.load_state_dict(old)
    assert adapter.class_stats is not None and not adapter.class_stats.available()


def test_statistics_that_describe_no_covariance_are_unavailable_not_an_error() -> None:
    """Pooled statistics a hostile sender shaped (a moment smaller than the class means
    imply) switch the branch off; a prediction never fails on them."""
    stats = _filled(*_gaussian_site([20, 20, 20], 8))
    stats.moment.zero_()
    assert stats.logits(torch.randn(4, DIM)) is None
    stats.moment.fill_(float("inf"))
    assert not stats.available() and stats.logits(torch.randn(4, DIM)) is None


def test_the_cached_discriminant_follows_every_change_of_the_statistics() -> None:
    x, y = _gaussian_site([20, 20, 20], 9)
    stats = _filled(x, y)
    first = stats.logits(x)
    assert first is not None and torch.equal(stats.logits(x), first)  # cached, same answer
    stats.fill(x[:30], y[:30])  # a new round's statistics
    assert not torch.allclose(stats.logits(x), first)
    stats.load_state_dict({k: torch.zeros_like(v) for k, v in stats.state_dict().items()})
    assert stats.logits(x) is None  # a model without statistics loaded over them
