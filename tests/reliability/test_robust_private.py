"""Robust aggregation against a poisoned node, and DP updates, through the hub's HTTP API.

Five honest nodes send deltas that share a direction; one poisoned node sends a delta a
thousand times larger pointing the other way and claims a hundred times more samples.
Each rule gets its own round on the same deltas; what the hub publishes is compared with
the honest mean.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fedmedclip.class_statistics import is_statistic
from fedmedclip.codec import encode_update, update_norm
from fedmedclip.privacy import DPConfig, PrivacyAccountant, epsilon_per_round, privatize_delta
from tests.reliability.support import threaded_hub
from tests.support.hub import ADMIN, SHAPES, Hub

pytestmark = pytest.mark.integration

HONEST = 5


def _deltas() -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(11)
    direction = {k: torch.randn(s, generator=generator) * 0.01 for k, s in SHAPES.items()}
    honest = [
        {k: v + torch.randn(v.shape, generator=generator) * 0.002 for k, v in direction.items()}
        for _ in range(HONEST)
    ]
    poisoned = {k: -1000 * v for k, v in direction.items()}
    return honest, poisoned


def _published_delta(hub: Hub, closed: dict) -> dict[str, torch.Tensor]:
    before, _, _ = hub.weights(closed["base_version"])
    after, _, _ = hub.weights(closed["result_version"])
    return {k: after[k] - before[k] for k in SHAPES}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return update_norm({k: a[k] - b[k] for k in SHAPES})


def _run_round(hub: Hub, tokens: dict[str, str], deltas: dict[str, dict], **rule) -> dict:
    info = hub.open_round(min_clients=len(deltas), **rule)
    for name, delta in deltas.items():
        body = encode_update(delta, base_version=info["base_version"], quantization="fp16")
        samples = 1000 if name == "poisoned" else 10
        response = hub.post_update(info["id"], tokens[name], body, samples=samples, key=name)
        assert response.status_code == 201, (name, response.text)
    closed = hub.close(info["id"]).json()
    assert closed["state"] == "published", closed
    return closed


@pytest.mark.slow
def test_one_poisoned_node_cannot_move_the_robust_aggregate_far(tmp_path: Path, figures):
    honest, poisoned = _deltas()
    honest_mean = {k: torch.stack([d[k] for d in honest]).mean(0) for k in SHAPES}
    scale = update_norm(honest_mean)
    deltas = {f"honest-{i}": d for i, d in enumerate(honest)} | {"poisoned": poisoned}
    errors = {}
    with threaded_hub(tmp_path / "hub") as (_, hub):
        tokens = {name: hub.add_node(name) for name in deltas}
        no_bound = {"norm_bound_factor": None}
        for label, rule in {
            "weighted_mean": {"aggregation_rule": "weighted_mean"} | no_bound,
            "weighted_mean+clip": {"aggregation_rule": "weighted_mean", "clip_norm": 2 * scale}
            | no_bound,
            "weighted_mean+default_bound": {"aggregation_rule": "weighted_mean"},
            "median": {"aggregation_rule": "median"} | no_bound,
            "trimmed_mean": {"aggregation_rule": "trimmed_mean"} | no_bound,
        }.items():
            closed = _run_round(hub, tokens, deltas, **rule)
            errors[label] = _distance(_published_delta(hub, closed), honest_mean) / scale
            if label == "weighted_mean+default_bound":  # 3 x the median norm: an honest one
                assert closed["applied_clip_norm"] == pytest.approx(3 * scale, rel=0.1)

        # With an update norm bound the poisoned update is refused and the rest aggregate.
        info = hub.open_round(min_clients=HONEST, max_update_norm=10 * scale)
        base = info["base_version"]
        refused = hub.post_update(
            info["id"], tokens["poisoned"], encode_update(poisoned, base_version=base), key="p"
        )
        assert refused.status_code == 400 and "exceeds the bound" in refused.json()["detail"]
        for i, delta in enumerate(honest):
            body = encode_update(delta, base_version=base, quantization="fp16")
            assert hub.post_update(info["id"], tokens[f"honest-{i}"], body).status_code == 201
        closed = hub.close(info["id"]).json()
        assert closed["updates_received"] == HONEST
        errors["weighted_mean+max_update_norm"] = (
            _distance(_published_delta(hub, closed), honest_mean) / scale
        )

    # The poisoned node drags the plain mean hundreds of honest norms away...
    assert errors["weighted_mean"] > 100
    # ...clipping bounds its pull, and the robust rules all but ignore it.
    assert errors["weighted_mean+clip"] < 3
    assert errors["weighted_mean+default_bound"] < 4
    assert errors["median"] < 0.5
    assert errors["trimmed_mean"] < 0.5
    assert errors["weighted_mean+max_update_norm"] < 0.01
    for label, error in errors.items():
        figures.set(f"robust.relative_error.{label}", round(error, 4))


def test_dp_update_passes_the_hub_when_its_bound_allows_and_budget_is_reported(
    tmp_path: Path, figures
):
    honest, _ = _deltas()
    config = DPConfig(clip_norm=0.05, noise_multiplier=8.0, delta=1e-5)
    # Noise goes on the trained tensors only; the class statistics are sent as zeros.
    dimension = sum(math.prod(s) for k, s in SHAPES.items() if not is_statistic(k))
    noise_norm = config.noise_std * math.sqrt(dimension)
    accountant = PrivacyAccountant()
    epsilons = []
    with threaded_hub(tmp_path / "hub") as (_, hub):
        tokens = {name: hub.add_node(name) for name in ("dp-a", "dp-b")}
        # A bound set for clean updates refuses a noised one, as docs/privacy.md warns.
        tight = hub.open_round(min_clients=2, max_update_norm=1.0)
        noisy = privatize_delta(honest[0], config, torch.Generator().manual_seed(1))
        body = encode_update(noisy, base_version=0, quantization="int4")
        refused = hub.post_update(tight["id"], tokens["dp-a"], body, key="tight")
        assert refused.status_code == 400 and "exceeds the bound" in refused.json()["detail"]
        hub.client.post(f"/api/v1/rounds/{tight['id']}/cancel", headers=ADMIN)

        for round_index in range(2):
            info = hub.open_round(min_clients=2, max_update_norm=2 * noise_norm)
            for offset, name in enumerate(tokens):
                generator = torch.Generator().manual_seed(100 * round_index + offset)
                noisy = privatize_delta(honest[offset], config, generator)
                assert update_norm(noisy) == pytest.approx(noise_norm, rel=0.05)
                body = encode_update(noisy, base_version=info["base_version"], quantization="int4")
                response = hub.post_update(info["id"], tokens[name], body, key=f"r{round_index}")
                assert response.status_code == 201, response.text
            closed = hub.close(info["id"]).json()
            assert closed["state"] == "published" and closed["updates_received"] == 2
            accountant.step(config.noise_multiplier)
            epsilons.append(accountant.epsilon(config.delta))

    per_round = epsilon_per_round(config.noise_multiplier, config.delta)
    assert epsilons[0] == pytest.approx(per_round)
    assert per_round == pytest.approx(1.01, abs=0.01)  # docs/privacy.md, z = 8, one round
    assert per_round < epsilons[1] < 2 * per_round  # composition is sublinear under RDP
    assert accountant.history == [8.0, 8.0]
    figures.set("dp.noise_multiplier", config.noise_multiplier)
    figures.set("dp.epsilon_per_round", round(per_round, 3))
    figures.set("dp.epsilon_after_2_rounds", round(epsilons[1], 3))
    figures.set("dp.update_norm", round(noise_norm, 2))
