"""Secure aggregation and distributed DP in the simulator's rounds loop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fedmedclip.backbone import load_backbone
from fedmedclip.class_statistics import is_statistic
from fedmedclip.codec import state_delta, update_norm
from fedmedclip.data.synth import synthesize_federation
from fedmedclip.privacy import epsilon_per_round
from fedmedclip.simulator import Federation, SimulationConfig, load_federation
from fedmedclip.simulator.methods import build_method
from fedmedclip.simulator.runner import run_round
from fedmedclip.simulator.secure import flatten, unflatten

PLAIN = SimulationConfig(rounds=1, local_epochs=1, seed=1, codec="none")
SECURE = dataclasses.replace(PLAIN, secure_aggregation=True)
DP = {"dp_clip_norm": 0.5, "dp_noise_multiplier": 4.0}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("fed")
    synthesize_federation(
        root / "data", hospitals=3, classes=3, per_hospital=30, seed=5, image_size=32
    )
    return load_federation(
        root / "data", load_backbone("ViT-S-32", "none"), cache_dir=root / "cache"
    )


def test_flatten_round_trips() -> None:
    state = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor([7.0])}
    back = unflatten(flatten(state), state)
    assert list(back) == ["b", "a"] and all(torch.equal(back[k], state[k]) for k in state)


def test_secure_round_publishes_the_sample_weighted_mean(federation: Federation) -> None:
    plain = build_method("fedmedclip", federation, PLAIN)
    secure = build_method("fedmedclip", federation, SECURE)
    base = plain.global_state()
    plain_record = run_round(plain, federation, 1)
    secure_record = run_round(secure, federation, 1)
    expected = state_delta(plain.global_state(), base)
    got = state_delta(secure.global_state(), base)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=2.0**-12), name
    # The masked upload is the whole vector in 4-byte ring elements, base64 in JSON.
    n_values = sum(v.numel() for v in base.values())
    for site, sent in secure_record.bytes_up.items():
        assert sent > (n_values + 1) * 4 * 4 / 3 > plain_record.bytes_up[site]


def test_distributed_dp_puts_the_central_noise_in_the_sum(federation: Federation) -> None:
    k = len(federation.sites)
    local = dataclasses.replace(SECURE, **DP)
    distributed = dataclasses.replace(local, dp_mode="distributed")
    norms = {}
    for name, config in (("local", local), ("distributed", distributed)):
        method = build_method("fedmedclip", federation, config)
        base = method.global_state()
        record = run_round(method, federation, 1)
        norms[name] = update_norm(state_delta(method.global_state(), base))
        assert record.dp_epsilon == pytest.approx(epsilon_per_round(4.0, 1e-5))
    # The class statistics are sent as zeros under DP, without noise.
    sqrt_d = math.sqrt(sum(v.numel() for k, v in base.items() if not is_statistic(k)))
    sigma = 4.0 * 0.5
    # Local DP: K full noises averaged (weights ~equal here); distributed: one central noise / K.
    assert norms["distributed"] == pytest.approx(sigma * sqrt_d / k, rel=0.1)
    assert norms["local"] == pytest.approx(sigma * sqrt_d / math.sqrt(k), rel=0.15)


def test_server_lr_scales_the_published_mean(federation: Federation) -> None:
    full = build_method("fedmedclip", federation, SECURE)
    half = build_method("fedmedclip", federation, dataclasses.replace(SECURE, server_lr=0.5))
    base = full.global_state()
    run_round(full, federation, 1)
    run_round(half, federation, 1)
    expected = state_delta(full.global_state(), base)
    got = state_delta(half.global_state(), base)
    for name in expected:
        assert torch.allclose(got[name], expected[name] * 0.5, atol=2.0**-12), name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({**DP, "dp_mode": "distributed"}, "distributed DP needs secure aggregation"),
        ({"dp_mode": "central"}, "unknown dp_mode"),
        ({"secure_aggregation": True, "aggregation_rule": "median"}, "cannot run the median"),
        ({"server_lr": 0.0}, "server_lr must be in"),
    ],
)
def test_secure_settings_are_validated(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**settings)
