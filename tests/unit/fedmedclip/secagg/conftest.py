import numpy as np
import pytest

from fedmedclip.secagg.params import RoundParams

DIM = 64


@pytest.fixture
def params() -> RoundParams:
    return RoundParams.create("round-1", [f"site{i}" for i in range(5)], DIM)


def make_updates(params: RoundParams, seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return {
        site: (rng.normal(scale=0.5, size=params.dimension), int(rng.integers(5, 500)))
        for site in params.clients
    }


def weighted_mean(updates: dict[str, tuple[np.ndarray, int]], sites) -> np.ndarray:
    total = sum(updates[s][1] for s in sites)
    return sum(updates[s][0] * updates[s][1] for s in sites) / total
