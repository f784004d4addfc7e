"""How a site combines its two branches: the typed choice, its JSON form, and the rule that
picks it on the validation split."""

import pytest
import torch
from pydantic import ValidationError

from fedmedclip.ensemble import Combination, choose_combination, ensemble


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
