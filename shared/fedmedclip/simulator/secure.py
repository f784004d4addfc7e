"""Secure aggregation in the simulator: the hub step through ``fedmedclip.secagg``.

With ``SimulationConfig.secure_aggregation`` every federated round runs the real protocol in
process (keys, sealed shares, masked fixed-point uploads, unmasking), so research runs use
the code a deployment would; the hub gets only the weighted mean. The fixed-point ring
replaces the update codec (masked values are uniform and do not compress), so the bytes a
round records are those of the protocol's JSON messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedmedclip.secagg import RoundCosts, RoundParams, run_round

State = Mapping[str, torch.Tensor]


def flatten(delta: State) -> np.ndarray:
    """Every tensor of ``delta`` in sorted name order, as one float64 vector."""
    return np.concatenate([delta[k].detach().double().cpu().numpy().ravel() for k in sorted(delta)])


def unflatten(vector: np.ndarray, like: State) -> dict[str, torch.Tensor]:
    """The inverse of ``flatten`` for tensors shaped like ``like`` (float32)."""
    out, offset = {}, 0
    for name in sorted(like):
        size = like[name].numel()
        chunk = torch.from_numpy(vector[offset : offset + size].astype(np.float32))
        out[name] = chunk.reshape(like[name].shape)
        offset += size
    return {name: out[name] for name in like}


def secure_mean(
    deltas: Mapping[str, tuple[State, float]], round_index: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The weighted mean of ``{site: (delta, weight)}`` through one secure-aggregation round,
    and the bytes each site uploaded. Weights must be whole numbers (sample counts, or 1)."""
    like = next(iter(deltas.values()))[0]
    vectors = {site: flatten(delta) for site, (delta, _) in deltas.items()}
    params = RoundParams.create(
        f"sim-{seed}-{round_index}", list(deltas), dimension=len(next(iter(vectors.values())))
    )
    costs = RoundCosts()
    aggregate = run_round(
        params,
        {site: (vectors[site], int(weight)) for site, (_, weight) in deltas.items()},
        costs=costs,
    )
    return unflatten(aggregate.mean(), like), dict(costs.bytes_up)
