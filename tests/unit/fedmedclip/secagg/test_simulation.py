import numpy as np
import pytest

from fedmedclip.secagg.errors import RoundFailed
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.simulation import RoundCosts, run_round

from .conftest import make_updates, weighted_mean

QUANTUM = 2.0**-12  # frac_bits of the default fixed point


@pytest.mark.parametrize("n", [5, 12])
def test_aggregate_is_the_weighted_mean_within_quantisation(n: int) -> None:
    params = RoundParams.create("r", [f"s{i:02d}" for i in range(n)], 64)
    updates = make_updates(params)
    aggregate = run_round(params, updates)
    assert aggregate.weight == sum(w for _, w in updates.values())
    assert aggregate.survivors == params.clients and aggregate.dropped == ()
    assert np.abs(aggregate.mean() - weighted_mean(updates, params.clients)).max() <= QUANTUM


def test_a_site_dropping_after_its_upload_is_recovered(params: RoundParams) -> None:
    updates = make_updates(params)
    gone = params.clients[2]
    aggregate = run_round(params, updates, drop_after_upload=[gone])
    # Its masked vector arrived, so its update counts; its self-mask came from the others.
    assert gone in aggregate.survivors
    assert np.abs(aggregate.mean() - weighted_mean(updates, params.clients)).max() <= QUANTUM


def test_a_site_dropping_before_its_upload_has_its_pair_masks_removed(
    params: RoundParams,
) -> None:
    updates = make_updates(params)
    gone = params.clients[0]
    aggregate = run_round(params, updates, drop_before_upload=[gone])
    kept = [s for s in params.clients if s != gone]
    assert aggregate.dropped == (gone,)
    assert aggregate.weight == sum(updates[s][1] for s in kept)
    assert np.abs(aggregate.mean() - weighted_mean(updates, kept)).max() <= QUANTUM


def test_sparse_graph_recovers_dropouts_too() -> None:
    params = RoundParams.create("r", [f"s{i:02d}" for i in range(16)], 32)
    assert params.degree < 15
    updates = make_updates(params)
    before, after = params.clients[3], params.clients[9]
    aggregate = run_round(params, updates, drop_before_upload=[before], drop_after_upload=[after])
    kept = [s for s in params.clients if s != before]
    assert np.abs(aggregate.mean() - weighted_mean(updates, kept)).max() <= QUANTUM


def test_fewer_survivors_than_the_threshold_fail_with_a_reason(params: RoundParams) -> None:
    updates = make_updates(params)
    with pytest.raises(RoundFailed, match="only 2 sites answered the unmasking phase"):
        run_round(params, updates, drop_after_upload=params.clients[:3])
    with pytest.raises(RoundFailed, match="only 2 sites uploaded"):
        run_round(params, updates, drop_before_upload=params.clients[:3])


def test_costs_are_counted_per_site(params: RoundParams) -> None:
    costs = RoundCosts()
    run_round(params, make_updates(params), costs=costs)
    assert set(costs.bytes_up) == set(params.clients)
    # The masked vector alone is (dimension + 1) 4-byte values, base64 in JSON.
    assert all(b > (params.dimension + 1) * 4 * 4 / 3 for b in costs.bytes_up.values())
    assert costs.hub_cpu_seconds > 0
