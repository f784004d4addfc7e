"""Client-side DP: clipping, noise scale, determinism, and the accountant against known bounds."""

import math

import pytest
import torch

from fedmedclip.codec import update_norm
from fedmedclip.privacy import (
    DPConfig,
    PrivacyAccountant,
    epsilon_after,
    epsilon_per_round,
    noise_multiplier_for,
    privatize_delta,
)

DELTA = 1e-5


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _update(scale: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "fam.l1.weight": torch.randn(8, 8) * scale,
        "fam.l1.threshold": torch.randn(8) * scale,
    }


def _pre_noise(delta: dict[str, torch.Tensor], config: DPConfig) -> dict[str, torch.Tensor]:
    """The clipped update before noise: the noise depends only on the seed, not on the data."""
    noisy = privatize_delta(delta, config, _seeded(7))
    noise = privatize_delta({k: torch.zeros_like(v) for k, v in delta.items()}, config, _seeded(7))
    return {k: noisy[k] - noise[k] for k in delta}


def _exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Tight epsilon of the Gaussian mechanism, sensitivity 1 (Balle and Wang 2018), bisection."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    def delta_at(eps: float) -> float:
        return phi(0.5 / sigma - eps * sigma) - math.exp(eps) * phi(-0.5 / sigma - eps * sigma)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return hi


def _classic_rdp_bound(sigma: float, delta: float, rounds: int = 1) -> float:
    """min over orders a > 1 of [rounds * a / (2 sigma^2) + log(1/delta) / (a - 1)], closed form.

    With b = a - 1 the minimum is at b = sigma * sqrt(2 L / rounds), L = log(1/delta).
    """
    log_inv = math.log(1 / delta)
    best = 1 + sigma * math.sqrt(2 * log_inv / rounds)
    return rounds * best / (2 * sigma**2) + log_inv / (best - 1)


def test_config_rejects_non_positive_values():
    for bad in (
        {"clip_norm": 0.0, "noise_multiplier": 1.0},
        {"clip_norm": 1.0, "noise_multiplier": -1.0},
        {"clip_norm": math.inf, "noise_multiplier": 1.0},
        {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 0.0},
        {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.0},
    ):
        with pytest.raises(ValueError):
            DPConfig(**bad)
    assert DPConfig(clip_norm=0.5, noise_multiplier=2.0).noise_std == pytest.approx(1.0)


def test_clipping_bounds_the_norm_before_noise():
    config = DPConfig(clip_norm=0.5, noise_multiplier=1.0)
    big = _update(scale=10.0)
    clipped = _pre_noise(big, config)
    assert update_norm(clipped) == pytest.approx(0.5, rel=1e-5)
    # Clipping scales the whole update: the direction is kept.
    factor = 0.5 / update_norm(big)
    for name in big:
        assert torch.allclose(clipped[name], big[name] * factor, atol=1e-5)
    small = _update(scale=1e-3)
    assert update_norm(small) < 0.5
    for name, value in _pre_noise(small, config).items():
        assert torch.allclose(value, small[name], atol=1e-5)


def test_noise_std_matches_multiplier_times_clip_norm():
    config = DPConfig(clip_norm=0.3, noise_multiplier=1.5)
    zeros = {"a": torch.zeros(1000, 1000), "b": torch.zeros(10_000)}
    noisy = privatize_delta(zeros, config, _seeded(3))
    values = torch.cat([t.reshape(-1) for t in noisy.values()])
    assert values.std().item() == pytest.approx(config.noise_std, rel=0.02)
    assert abs(values.mean().item()) < 0.01 * config.noise_std
    assert noisy["a"].shape == (1000, 1000) and noisy["a"].dtype == torch.float32


def test_seeded_generator_is_deterministic_and_order_independent():
    config = DPConfig(clip_norm=1.0, noise_multiplier=1.0)
    delta = _update(scale=1.0)
    first = privatize_delta(delta, config, _seeded(11))
    again = privatize_delta(dict(reversed(list(delta.items()))), config, _seeded(11))
    other = privatize_delta(delta, config, _seeded(12))
    assert list(first) == list(delta)
    for name in delta:
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])


def test_default_noise_ignores_torchs_global_seed():
    # train_local seeds torch's global generator from a config the hub may know.
    config = DPConfig(clip_norm=1.0, noise_multiplier=1.0)
    delta = _update(scale=1.0)
    torch.manual_seed(0)
    first = privatize_delta(delta, config)
    torch.manual_seed(0)
    second = privatize_delta(delta, config)
    assert not torch.equal(first["fam.l1.weight"], second["fam.l1.weight"])


def test_non_finite_update_is_refused():
    config = DPConfig(clip_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        privatize_delta({"w": torch.tensor([1.0, math.nan])}, config)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    by_rounds = [epsilon_after(t, 1.0, DELTA) for t in (1, 5, 20, 100)]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4
    by_noise = [epsilon_per_round(z, DELTA) for z in (0.5, 1.0, 2.0, 8.0)]
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4


@pytest.mark.parametrize(
    ("relation", "sensitivity"), [("replace_with_zero", 1.0), ("replace_one", 2.0)]
)
@pytest.mark.parametrize("rounds", [1, 10])
def test_epsilon_lies_between_exact_gaussian_and_classic_rdp_bound(relation, sensitivity, rounds):
    noise_multiplier = 1.0
    # T rounds of the Gaussian mechanism compose exactly to one with sigma / sqrt(T).
    sigma = noise_multiplier / sensitivity
    eps = epsilon_after(rounds, noise_multiplier, DELTA, relation)
    assert 0 < eps <= _classic_rdp_bound(sigma, DELTA, rounds)
    assert eps >= _exact_gaussian_epsilon(sigma / math.sqrt(rounds), DELTA) * (1 - 1e-6)


def test_known_setting_noise_one_one_round():
    eps = epsilon_per_round(1.0, DELTA, "replace_with_zero")
    bound = _classic_rdp_bound(1.0, DELTA)
    assert bound == pytest.approx(5.299, abs=1e-3)
    assert 4.38 < eps <= bound  # the exact Gaussian epsilon here is about 4.377


def test_accountant_composes_rounds_with_different_noise():
    accountant = PrivacyAccountant()
    assert accountant.epsilon(DELTA) == 0.0 and accountant.rounds == 0
    accountant.step(2.0)
    assert accountant.epsilon(DELTA) == pytest.approx(epsilon_per_round(2.0, DELTA))
    accountant.step(2.0, rounds=4)
    assert accountant.rounds == 5
    assert accountant.epsilon(DELTA) == pytest.approx(epsilon_after(5, 2.0, DELTA))
    before = accountant.epsilon(DELTA)
    accountant.step(4.0)
    assert before < accountant.epsilon(DELTA) < epsilon_after(6, 2.0, DELTA)
    assert accountant.history == [2.0] * 5 + [4.0]


def test_replace_one_costs_as_much_as_half_the_noise_against_zero():
    assert epsilon_after(3, 2.0, DELTA, "replace_one") == pytest.approx(
        epsilon_after(3, 1.0, DELTA, "replace_with_zero")
    )


def test_accountant_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PrivacyAccountant(relation="add_or_remove")  # type: ignore[arg-type]
    accountant = PrivacyAccountant()
    with pytest.raises(ValueError):
        accountant.step(0.0)
    with pytest.raises(ValueError):
        accountant.step(1.0, rounds=0)
    with pytest.raises(ValueError):
        accountant.epsilon(0.0)


@pytest.mark.parametrize("relation", ["replace_one", "replace_with_zero"])
@pytest.mark.parametrize(("epsilon", "rounds"), [(1.0, 5), (8.0, 5), (8.0, 50), (16.0, 1)])
def test_noise_multiplier_for_meets_the_budget_tightly(epsilon, rounds, relation):
    z = noise_multiplier_for(epsilon, rounds, DELTA, relation)
    assert epsilon_after(rounds, z, DELTA, relation) <= epsilon
    # Tight: 1% less noise would overspend, so the budget is not wasted on extra noise.
    assert epsilon_after(rounds, 0.99 * z, DELTA, relation) > epsilon


def test_noise_multiplier_for_matches_the_documented_table():
    # docs/privacy.md: z = 4 spends 8.08 over 10 rounds (replace_one, delta 1e-5).
    assert noise_multiplier_for(8.08, 10, DELTA) == pytest.approx(4.0, rel=2e-3)


def test_noise_multiplier_for_rejects_bad_arguments():
    for bad in ({"epsilon": 0.0}, {"rounds": 0}, {"delta": 1.0}):
        arguments = {"epsilon": 8.0, "rounds": 5, "delta": DELTA} | bad
        with pytest.raises(ValueError):
            noise_multiplier_for(**arguments)
