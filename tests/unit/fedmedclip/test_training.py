"""Local training: learning, determinism, progress reports."""

import pytest
import torch
from torch.nn import functional as F

from fedmedclip.losses import adaptive_distillation_loss, prototype_contrastive_loss
from fedmedclip.model import AdapterConfig, adapter_state, build_adapter, build_head
from fedmedclip.prediction import branch_logits, calibrate, predict
from fedmedclip.training import ABSENT_LOG_PRIOR, TrainConfig, class_log_prior, train_local

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


@pytest.mark.parametrize("adaptive", [True, False])
def test_the_round_loss_is_contrastive_plus_ce_plus_weighted_distillation(adaptive):
    """One batch, one epoch: the recorded loss is the loss at the initial weights, so it must
    equal the terms computed here (contrastive, CE, KD with its weight and adaptive switch,
    pruning pressure; the classes are balanced, so the balanced loss's prior is a constant
    shift that changes nothing)."""
    feats, labels, text = _separable(24)
    config = TrainConfig(
        epochs=1, batch_size=64, kd_weight=0.5, adaptive_kd=adaptive, prune_weight=0.1
    )
    adapter, head = build_adapter(CONFIG), build_head(CONFIG)
    adapter.train()
    head.train()  # BatchNorm on batch statistics, as in training
    head.fit_standardisation(feats)  # what train_local does first
    with torch.no_grad():
        adapted = adapter.adapt(head.standardise(feats))
        fam_logits = adapter.class_logits(adapted, text)
        head_logits = head(adapted)
        contrastive = prototype_contrastive_loss(fam_logits, labels)
        ce = torch.nn.functional.cross_entropy(head_logits, labels)
        kd = adaptive_distillation_loss(fam_logits, head_logits, temperature=2.0, adaptive=adaptive)
        other = adaptive_distillation_loss(
            fam_logits, head_logits, temperature=2.0, adaptive=not adaptive
        )
        layers = adapter.masked_layers() + head.masked_layers()
        pruning = sum(layer.sparsity_penalty() for layer in layers)
    assert abs(float(kd - other)) > 1e-4  # the switch matters on this batch
    result = train_local(build_adapter(CONFIG), build_head(CONFIG), feats, labels, text, config)
    expected = float(contrastive + ce + 0.5 * kd + 0.1 * pruning)
    assert result.epoch_losses[0] == pytest.approx(expected, rel=1e-5)
    assert 0.5 * float(kd) > 1e-3 * expected  # the KD term is not negligible in the sum


def test_the_reference_settings_are_the_authors():
    first, tenth = TrainConfig.reference(1), TrainConfig.reference(10, seed=3)
    assert (first.epochs, first.batch_size, first.optimizer) == (1, 32, "adam")
    assert (first.lr, first.head_lr) == (5e-4, 1e-4)
    assert (first.betas, first.eps, first.weight_decay) == ((0.9, 0.98), 1e-6, 0.02)
    assert tenth.lr == pytest.approx(5e-4 * 0.97**9) and tenth.seed == 3
    feats, labels, text = _separable(40)
    adapter, head = build_adapter(CONFIG), build_head(CONFIG)
    before = adapter_state(adapter)
    result = train_local(adapter, head, feats, labels, text, first)
    assert len(result.epoch_losses) == 1
    assert any(not torch.equal(before[k], v) for k, v in result.adapter_state.items())


def _two_sites(camera: float = 3.0) -> tuple[torch.Tensor, ...]:
    """Two sites with the same classes, each seen through its own large constant 'camera'
    offset: far more of each embedding than the class signal."""
    feats, labels, text = _separable(150, seed=1)
    g = torch.Generator().manual_seed(2)
    camera_a, camera_b = camera * torch.randn(2, 32, generator=g)
    return feats[:90] + camera_a, labels[:90], feats[90:] + camera_b, labels[90:], text


@pytest.mark.parametrize("standardise", [True, False])
def test_per_site_standardisation_lets_prototypes_learnt_at_one_site_serve_another(standardise):
    """The shared branch trained at site A recognises site B's images only when each site
    standardises its own embeddings (reverting the standardisation fails the True case)."""
    xa, ya, xb, yb, text = _two_sites()
    config = AdapterConfig(dim=32, n_classes=3, learn_prototypes=True)
    adapter, head_a, head_b = build_adapter(config), build_head(config), build_head(config, 1)
    train = TrainConfig(epochs=30, lr=1e-2, standardise_inputs=standardise)
    train_local(adapter, head_a, xa, ya, text, train)
    if standardise:
        head_b.fit_standardisation(xb)  # site B's own statistics: no label needed, none sent
    fam_logits, _ = branch_logits(adapter, head_b, xb, text)
    accuracy = float((fam_logits.argmax(-1) == yb).float().mean())
    assert (accuracy > 0.9) if standardise else (accuracy < 0.7)


def test_the_standardisation_is_the_sites_mean_and_spread_and_old_heads_load():
    feats, labels, text = _separable(40)
    head = build_head(CONFIG)
    train_local(build_adapter(CONFIG), head, feats + 5.0, labels, text, TrainConfig(epochs=1))
    normalised = F.normalize(feats + 5.0, dim=-1)
    assert torch.allclose(head.input_mean, normalised.mean(0), atol=1e-6)
    assert torch.allclose(head.input_scale, normalised.std(0, unbiased=False), atol=1e-6)
    standardised = head.standardise(feats + 5.0)
    assert torch.allclose(standardised.mean(0), torch.zeros(32), atol=1e-5)
    old = {k: v for k, v in head.state_dict().items() if not k.startswith("input_")}
    fresh = build_head(CONFIG)
    fresh.load_state_dict(old)  # a head stored before the standardisation: the identity
    assert torch.equal(fresh.input_mean, torch.zeros(32))
    assert torch.equal(fresh.input_scale, torch.ones(32))


@pytest.mark.parametrize("balanced", [True, False])
def test_a_class_the_site_lacks_keeps_its_federated_prototype(balanced):
    """With the balanced loss a site's round leaves the prototype of a class it lacks where
    the federation put it, so the hub's mean takes it from the sites that have the class;
    with the plain loss the site pushes it away from its own images."""
    feats, labels, text = _separable(60)
    config = AdapterConfig(dim=32, n_classes=4, learn_prototypes=True)
    text = torch.cat([text, torch.randn(1, 32)])
    adapter = build_adapter(config)
    train_local(
        adapter, build_head(config), feats, labels, text, TrainConfig(balanced_loss=balanced)
    )
    moved = adapter.prototype_offset.detach()[3].abs().max().item()
    assert (moved == 0.0) if balanced else (moved > 1e-3)
    assert adapter.prototype_offset.detach()[:3].abs().max().item() > 1e-3


def test_the_balanced_loss_adds_the_sites_log_prior():
    labels = torch.tensor([0, 0, 0, 1])
    prior = class_log_prior(labels, 3)
    assert torch.allclose(prior[:2], torch.tensor([0.75, 0.25]).log())
    assert prior[2] == ABSENT_LOG_PRIOR
    assert torch.softmax(torch.zeros(3) + prior, dim=0)[2] == 0.0
