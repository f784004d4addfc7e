"""Training losses: prototype contrastive loss, cross-entropy, adaptive KL distillation.

Entropies are always taken of probabilities (``-sum p log p``) computed from logits with a
numerically stable log-softmax; the authors' reference applies a softmax to values that are
already probabilities, and then never uses the adaptive weight it computes.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits / T)`` per row."""
    logp = F.log_softmax(logits / temperature, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def prototype_contrastive_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-to-prototype contrastive loss.

    Each image is contrasted with one prototype per class instead of with the other images'
    texts, so two images of the same class are never each other's negatives.
    """
    return F.cross_entropy(class_logits, labels)


def kl_divergence(
    p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-sample KL(p || q) between tempered softmaxes of two logit tensors."""
    logp = F.log_softmax(p_logits / temperature, dim=-1)
    logq = F.log_softmax(q_logits / temperature, dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def teacher_weight(fam_logits: torch.Tensor, head_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample weight of the FAM branch as teacher, from the two entropies.

    ``w = H_head / (H_fam + H_head)``: the less certain the head is relative to the FAM
    branch, the more it learns from it; ``1 - w`` weighs the opposite direction.
    """
    h_fam = entropy_from_logits(fam_logits)
    h_head = entropy_from_logits(head_logits)
    return h_head / (h_fam + h_head).clamp_min(1e-12)


def adaptive_distillation_loss(
    fam_logits: torch.Tensor,
    head_logits: torch.Tensor,
    *,
    temperature: float = 2.0,
    adaptive: bool = True,
) -> torch.Tensor:
    """Mutual KL distillation between the FAM branch and the head.

    Each direction treats the other branch as a fixed teacher (its logits are detached) and
    is weighted per sample by :func:`teacher_weight` when ``adaptive``; otherwise both
    directions weigh 1/2 (the ablation). Scaled by ``T^2`` so the gradient magnitude does
    not shrink with the temperature.
    """
    if adaptive:
        with torch.no_grad():
            w = teacher_weight(fam_logits, head_logits)
    else:
        w = torch.full(fam_logits.shape[:1], 0.5, device=fam_logits.device)
    head_learns = kl_divergence(fam_logits.detach(), head_logits, temperature)
    fam_learns = kl_divergence(head_logits.detach(), fam_logits, temperature)
    per_sample = w * head_learns + (1.0 - w) * fam_learns
    return temperature**2 * per_sample.mean()
