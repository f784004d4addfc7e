import pytest
from pydantic import ValidationError

from fedmedclip.secagg.params import RoundParams, default_degree, default_threshold


def sites(n: int) -> list[str]:
    return [f"site{i:02d}" for i in range(n)]


def test_small_federations_use_the_complete_graph() -> None:
    params = RoundParams.create("r", sites(5), 10)
    assert params.degree == 4 and params.threshold == 3
    assert all(len(v) == 4 for v in params.neighbours.values())


@pytest.mark.parametrize("n", [10, 50, 200])
def test_sparse_graph_is_regular_symmetric_and_logarithmic(n: int) -> None:
    params = RoundParams.create("r", sites(n), 10)
    assert params.degree == default_degree(n) < n - 1
    assert params.degree <= 2 * (n.bit_length() + 1)
    graph = params.neighbours
    for site, peers in graph.items():
        assert len(peers) == params.degree and site not in peers
        assert all(site in graph[p] for p in peers)


def test_graph_is_a_function_of_the_public_seed() -> None:
    a = RoundParams.create("r", sites(20), 10)
    same = RoundParams(**a.model_dump())
    other = RoundParams(**{**a.model_dump(), "graph_seed": bytes(32)})
    assert same.neighbours == a.neighbours
    assert other.neighbours != a.neighbours


def test_threshold_must_be_a_strict_majority_of_the_neighbours() -> None:
    assert default_threshold(4) == 3 and default_threshold(12) == 9
    with pytest.raises(ValidationError, match="strict majority"):
        RoundParams.create("r", sites(5), 10, threshold=2)
    with pytest.raises(ValidationError, match="at least 3 sites"):
        RoundParams.create("r", sites(2), 10)
    with pytest.raises(ValidationError, match="even degree"):
        RoundParams.create("r", sites(10), 10, degree=5)
