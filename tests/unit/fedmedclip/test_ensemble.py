"""The entropy-weighted ensemble, temperature fitting, and the combination a site chooses."""

import pytest
import torch
from pydantic import ValidationError

from fedmedclip.ensemble import Combination, choose_combination, ensemble, fit_temperature


def test_ensemble_weighs_the_more_confident_branch_more():
    fam = torch.tensor([[0.1, 0.0, 0.0], [9.0, 0.0, 0.0]])
    head = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.1, 0.0]])
    out = ensemble(fam, head)
    assert out.alpha[0] > 0.9  # head confident -> head weighs more
    assert out.alpha[1] < 0.1  # FAM confident -> FAM weighs more
    assert out.probabilities[0].argmax() == 1
    assert out.probabilities[1].argmax() == 0
    assert torch.allclose(out.probabilities.sum(-1), torch.ones(2))


def test_fit_temperature_softens_overconfident_logits():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (300,))
    logits = torch.randn(300, 3) * 0.5
    logits[torch.arange(300), labels] += 1.0
    base = fit_temperature(logits, labels)
    # Scaling logits 20x makes them overconfident; the fitted temperature scales along.
    assert 10 < fit_temperature(logits * 20, labels) / base < 40


def test_a_tiny_validation_split_cannot_make_a_branch_near_certain():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    logits = torch.zeros(8, 3)
    logits[torch.arange(8), labels] = 1.0  # all right, mildly confident
    plain = fit_temperature(logits, labels, prior_sigma=1e6)  # effectively no prior
    shrunk = fit_temperature(logits, labels)
    assert plain < 0.1  # the plain NLL fit sharpens as far as float precision lets it
    assert 0.3 < shrunk < 1.0  # the prior keeps it sharpening, but moderately


def _logits(labels: torch.Tensor, n_classes: int, right: torch.Tensor, margin: float = 4.0):
    """Logits that put ``margin`` on the true class where ``right``, on the next class elsewhere."""
    target = torch.where(right, labels, (labels + 1) % n_classes)
    return margin * torch.nn.functional.one_hot(target, n_classes).float()


def test_combination_round_trips_through_json():
    for combination in (
        Combination(),
        Combination(kind="head"),
        Combination(kind="fam"),
        Combination(kind="weighted", head_weight=0.3),
    ):
        assert Combination.model_validate_json(combination.model_dump_json()) == combination
        assert Combination.model_validate(combination.model_dump(mode="json")) == combination
    assert Combination().kind == "entropy"  # heads recorded without a choice keep the paper's


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "vote"},
        {"kind": "weighted"},
        {"kind": "head", "head_weight": 0.5},
        {"kind": "weighted", "head_weight": 1.5},
        {"kind": "entropy", "extra": 1},
    ],
)
def test_invalid_combinations_are_refused(raw):
    with pytest.raises(ValidationError):
        Combination.model_validate(raw)


def test_each_kind_mixes_the_branches_as_it_says():
    fam, head = torch.randn(6, 3), torch.randn(6, 3)
    p_fam, p_head = torch.softmax(fam, -1), torch.softmax(head, -1)
    assert torch.allclose(Combination(kind="head").apply(fam, head).probabilities, p_head)
    assert torch.allclose(Combination(kind="fam").apply(fam, head).probabilities, p_fam)
    weighted = Combination(kind="weighted", head_weight=0.25).apply(fam, head)
    assert torch.allclose(weighted.probabilities, 0.75 * p_fam + 0.25 * p_head)
    assert torch.allclose(weighted.alpha, torch.full((6,), 0.25))
    paper = Combination().apply(fam, head, fam_temperature=2.0)
    assert torch.allclose(
        paper.probabilities, ensemble(fam, head, fam_temperature=2.0).probabilities
    )


def test_a_clearly_better_branch_is_chosen():
    labels = torch.arange(60) % 3
    head = _logits(labels, 3, torch.ones(60, dtype=torch.bool))
    fam = _logits(labels, 3, torch.arange(60) % 2 == 0)  # right half the time
    assert choose_combination(fam, head, labels).combination.kind == "head"
    assert choose_combination(head, fam, labels).combination.kind == "fam"


def test_a_gain_within_the_noise_keeps_the_paper_ensemble():
    """One image out of twelve separates the branches: not enough to leave the default."""
    labels = torch.arange(12) % 3
    fam = _logits(labels, 3, torch.ones(12, dtype=torch.bool), margin=2.0)
    head_right = torch.ones(12, dtype=torch.bool)
    head_right[0] = False
    head = _logits(labels, 3, head_right, margin=2.0)
    choice = choose_combination(fam, head, labels)
    assert choice.combination == Combination()
    assert choice.scores["fam"] > choice.scores["entropy"]  # a gain, but within the noise
    # Without the noise rule the same split would have switched.
    assert choose_combination(fam, head, labels, z=0.0).combination.kind != "entropy"


def test_the_choice_weighs_every_class_the_same():
    """A branch that knows the rare class wins although it is worse on plain accuracy."""
    labels = torch.tensor([0] * 90 + [1] * 10)
    head_right = labels == 0  # never recognises the rare class
    fam_right = torch.ones(100, dtype=torch.bool)
    fam_right[:20] = False  # misses 20 of the common class
    fam = _logits(labels, 2, fam_right)
    head = _logits(labels, 2, head_right)
    assert choose_combination(fam, head, labels).combination.kind in ("fam", "weighted")


def test_an_empty_validation_split_keeps_the_default():
    empty = torch.empty(0, 3)
    choice = choose_combination(empty, empty, torch.empty(0, dtype=torch.long))
    assert choice.combination == Combination()


def test_head_statistics_needs_a_weight_and_the_statistics_branch() -> None:
    with pytest.raises(ValidationError):
        Combination(kind="head_statistics")
    with pytest.raises(ValidationError):
        Combination(kind="statistics", head_weight=0.5)
    fam, head = torch.zeros(2, 3), torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    stats = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 4.0]])
    mixed = Combination(kind="head_statistics", head_weight=0.3).apply(
        fam, head, stats_logits=stats
    )
    expected = 0.3 * torch.softmax(head, -1) + 0.7 * torch.softmax(stats, -1)
    assert torch.allclose(mixed.probabilities, expected)
    assert mixed.stats_probabilities is not None
    with pytest.raises(ValueError, match="class statistics"):
        Combination(kind="statistics").apply(fam, head)


def test_with_statistics_the_choice_is_among_head_and_statistics() -> None:
    torch.manual_seed(0)
    labels = torch.arange(3).repeat(20)
    fam = torch.randn(60, 3)
    head = torch.randn(60, 3)
    stats = torch.full((60, 3), -3.0)
    stats[torch.arange(60), labels] = 3.0  # the statistics know every class
    choice = choose_combination(fam, head, labels, stats_logits=stats)
    assert choice.combination.uses_statistics
    assert "statistics" in choice.scores and "entropy" not in choice.scores
    # Without statistics the paper's candidates are the ones scored.
    assert "entropy" in choose_combination(fam, head, labels).scores


def test_a_site_whose_federated_branches_are_useless_gets_its_local_head():
    """Both federated branches are right a third of the time, the local head always."""
    labels = torch.arange(60) % 3
    useless = _logits(labels, 3, torch.arange(60) % 3 == 0)
    local = _logits(labels, 3, torch.ones(60, dtype=torch.bool))
    choice = choose_combination(useless, useless, labels, local_logits=local)
    assert choice.combination == Combination(kind="local")
    predicted = choice.combination.apply(useless, useless, local_logits=local).probabilities
    assert torch.equal(predicted.argmax(-1), labels)
    # Without the candidate the same site keeps a federated option.
    assert choose_combination(useless, useless, labels).combination.kind != "local"


def test_a_federated_gain_within_the_noise_keeps_the_local_head():
    """The local head is the incumbent: one image out of twelve is not evidence enough."""
    labels = torch.arange(12) % 3
    federated = _logits(labels, 3, torch.ones(12, dtype=torch.bool), margin=2.0)
    local = _logits(labels, 3, torch.arange(12) != 0, margin=3.0)  # surer, but one miss
    choice = choose_combination(federated, federated, labels, local_logits=local)
    assert choice.scores["entropy"] > choice.scores["local"]  # a gain, but within the noise
    assert choice.combination == Combination(kind="local")
    # Without the noise rule the same split would have taken the federated option.
    kept = choose_combination(federated, federated, labels, local_logits=local, z=0.0)
    assert kept.combination.kind != "local"


def test_a_clearly_better_federated_choice_replaces_the_local_head():
    labels = torch.arange(60) % 3
    federated = _logits(labels, 3, torch.ones(60, dtype=torch.bool))
    local = _logits(labels, 3, torch.arange(60) % 3 == 0)  # right a third of the time
    stats = _logits(labels, 3, torch.ones(60, dtype=torch.bool))
    for kwargs in ({}, {"stats_logits": stats}):
        choice = choose_combination(federated, federated, labels, local_logits=local, **kwargs)
        assert choice.combination.kind != "local"


def test_the_local_combination_needs_the_local_logits():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="local head"):
        Combination(kind="local").apply(logits, logits)
    assert Combination.model_validate_json('{"kind": "local"}') == Combination(kind="local")
