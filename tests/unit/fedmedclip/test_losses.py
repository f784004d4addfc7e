"""Entropy, KL and the adaptive weighting against direct computations."""

import math

import torch

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
