"""Entropy, KL and the adaptive weighting against direct computations."""

import math

import torch

from fedmedclip.ensemble import ensemble, fit_temperature
from fedmedclip.losses import (
    adaptive_distillation_loss,
    entropy_from_logits,
    kl_divergence,
    teacher_weight,
)


def test_entropy_matches_direct_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    p = torch.softmax(logits, dim=-1)
    direct = -(p * p.log()).sum(dim=-1)
    assert torch.allclose(entropy_from_logits(logits), direct, atol=1e-6)
    assert math.isclose(entropy_from_logits(logits)[1].item(), math.log(3), rel_tol=1e-6)


def test_kl_matches_direct_formula_with_temperature():
    a = torch.tensor([[1.0, 2.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 3.0]])
    t = 2.0
    p, q = torch.softmax(a / t, -1), torch.softmax(b / t, -1)
    direct = (p * (p / q).log()).sum(-1)
    assert torch.allclose(kl_divergence(a, b, t), direct, atol=1e-6)


def test_teacher_weight_favours_the_confident_branch():
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.1, 0.0, 0.05]])
    # FAM confident, head unsure: the head should learn mostly from the FAM (w near 1).
    assert teacher_weight(confident, unsure).item() > 0.9
    assert teacher_weight(unsure, confident).item() < 0.1


def test_adaptive_weight_changes_the_loss_and_can_be_switched_off():
    fam = torch.tensor([[8.0, 0.0, 0.0], [0.2, 0.1, 0.0]])
    head = torch.tensor([[0.0, 0.3, 0.1], [0.0, 6.0, 0.0]])
    adaptive = adaptive_distillation_loss(fam, head, temperature=2.0, adaptive=True)
    plain = adaptive_distillation_loss(fam, head, temperature=2.0, adaptive=False)
    w = teacher_weight(fam, head)
    expected = 4.0 * (w * kl_divergence(fam, head, 2.0) + (1 - w) * kl_divergence(head, fam, 2.0))
    assert torch.allclose(adaptive, expected.mean(), atol=1e-6)
    half = 4.0 * (0.5 * kl_divergence(fam, head, 2.0) + 0.5 * kl_divergence(head, fam, 2.0))
    assert torch.allclose(plain, half.mean(), atol=1e-6)
    assert not torch.allclose(adaptive, plain)


def test_distillation_gradient_flows_to_the_student_only():
    fam = torch.tensor([[3.0, 0.0, 0.0]], requires_grad=True)
    head = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    adaptive_distillation_loss(fam, head).backward()
    assert fam.grad.abs().sum() > 0 and head.grad.abs().sum() > 0


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
