"""Local training over cached features: the FAM and a private head learn one site's round.

The frozen encoders are never run here: the inputs are embeddings from the feature cache.
What a round then does with the heads lives in :mod:`fedmedclip.heads`, how a site scores
its branches in :mod:`fedmedclip.prediction`, and the whole round a site runs in
:mod:`fedmedclip.site_round`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.nn import functional as F

from fedmedclip import training_defaults as defaults
from fedmedclip.losses import adaptive_distillation_loss, prototype_contrastive_loss
from fedmedclip.model import PrivateHead, SharedAdapter, adapter_inputs, adapter_state


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one local round.

    ``standardise_inputs``: the head fits the site's input standardisation on the training
    features before the round (:meth:`PrivateHead.fit_standardisation`). ``balanced_loss``:
    both branches learn with the site's class prior added to their logits (balanced
    softmax), so a class the site rarely sees is not trained away and one it lacks leaves
    its prototype to the sites that have it (see :func:`class_log_prior`).

    The loss weights follow the paper (lambda 0.04, T 2). The optimiser defaults are ours
    (one AdamW step size for FAM and head, 5 epochs of batch 64, no decay over rounds);
    :meth:`reference` gives the authors' settings. ``docs/method.md`` compares the two.
    ``head_lr`` None means the head learns at ``lr`` too.
    """

    epochs: int = defaults.LOCAL_EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LR
    head_lr: float | None = None
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    optimizer: Literal["adamw", "adam"] = "adamw"
    kd_weight: float = defaults.KD_WEIGHT
    kd_temperature: float = defaults.KD_TEMPERATURE
    adaptive_kd: bool = defaults.ADAPTIVE_KD
    prune_weight: float = defaults.PRUNE_WEIGHT
    standardise_inputs: bool = True
    balanced_loss: bool = True
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def reference(cls, round_index: int = 1, **overrides: Any) -> TrainConfig:
        """The authors' reference settings for round ``round_index`` (1-based).

        Adam (weight decay as an L2 term, as ``torch.optim.Adam`` applies it) with betas
        (0.9, 0.98), eps 1e-6 and weight decay 0.02; the FAM at 5e-4 and the head at 1e-4,
        both decayed by 0.97 per round; one local epoch of batch 32.
        """
        decay = REFERENCE_DECAY ** (round_index - 1)
        settings: dict[str, Any] = {
            "epochs": 1,
            "batch_size": 32,
            "lr": 5e-4 * decay,
            "head_lr": 1e-4 * decay,
            "weight_decay": 0.02,
            "betas": (0.9, 0.98),
            "eps": 1e-6,
            "optimizer": "adam",
        }
        return cls(**(settings | overrides))


REFERENCE_DECAY = 0.97
"""The reference code's learning-rate decay per communication round."""


@dataclass
class TrainResult:
    """What a local round produces. ``head_state`` stays on the site."""

    adapter_state: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor] | None
    n_samples: int
    epoch_losses: list[float] = field(default_factory=list)
    pruned_rows: dict[str, torch.Tensor] = field(default_factory=dict)


ProgressFn = Callable[[int, int, float], None]
"""``progress(epoch, epochs, mean_loss)`` after each epoch."""


def train_local(
    adapter: SharedAdapter,
    head: PrivateHead | None,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    config: TrainConfig,
    *,
    train_adapter: bool = True,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``adapter`` and ``head`` in place with AdamW and return their new states.

    Loss = contrastive(FAM branch) + CE(head) + kd_weight * adaptive KL(FAM, head)
    + prune_weight * pruning pressure. Without a head this is FedCLIP (FAM only); with
    ``train_adapter=False`` only the head learns (the local-only baseline).
    Deterministic for a seed: the shuffling has its own generator.
    """
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    adapter.to(device).train(train_adapter)
    if head is not None:
        head.to(device).train()
    optimiser = _optimiser(adapter if train_adapter else None, head, config)
    if head is not None and config.standardise_inputs:
        head.fit_standardisation(features)
    x_all = adapter_inputs(head, features.to(device))
    y_all = labels.to(device)
    if train_adapter and head is not None and adapter.class_stats is not None:
        adapter.class_stats.fill(x_all, y_all)  # sent with the update (class_statistics.py)
    text = text_prototypes.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(y_all)
    shift = class_log_prior(y_all, text.shape[0]) if config.balanced_loss else 0.0
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total, batches = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 and head is not None:
                continue  # BatchNorm cannot train on a single sample
            x, y = x_all[idx], y_all[idx]
            with torch.set_grad_enabled(train_adapter):
                adapted = adapter.adapt(x)
                fam_logits = adapter.class_logits(adapted, text)
            loss = prototype_contrastive_loss(fam_logits + shift, y) if train_adapter else 0.0
            if head is not None:
                head_logits = head(adapted)
                loss = loss + F.cross_entropy(head_logits + shift, y)
                if train_adapter and config.kd_weight > 0:
                    loss = loss + config.kd_weight * adaptive_distillation_loss(
                        fam_logits + shift,
                        head_logits + shift,
                        temperature=config.kd_temperature,
                        adaptive=config.adaptive_kd,
                    )
            if config.prune_weight > 0:
                layers = (adapter.masked_layers() if train_adapter else []) + (
                    head.masked_layers() if head is not None else []
                )
                loss = loss + config.prune_weight * sum(m.sparsity_penalty() for m in layers)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item()
            batches += 1
        losses.append(total / max(batches, 1))
        if progress:
            progress(epoch + 1, config.epochs, losses[-1])
    adapter.eval()
    if head is not None:
        head.eval()
    pruned = {
        f"fam.{name}.weight": ~layer.kept_rows().cpu()
        for name, layer in (("l1", adapter.fam.l1), ("l2", adapter.fam.l2))
    }
    return TrainResult(
        adapter_state=adapter_state(adapter),
        head_state=(
            {k: v.detach().cpu().clone() for k, v in head.state_dict().items()} if head else None
        ),
        n_samples=n,
        epoch_losses=losses,
        pruned_rows=pruned,
    )


def class_log_prior(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log of the site's class frequencies, ``ABSENT_LOG_PRIOR`` for a class it lacks.

    Added to both branches' logits in every training term (balanced softmax; the mutual
    distillation then compares the two branches' site posteriors): the branches learn the
    class-balanced posterior instead of the site's skewed one, and the prediction leaves
    the prior out. A class the site lacks gets probability exactly 0 in its loss, so the
    site neither learns nor pushes away that class's prototype (its row of the update is
    zero) and the federated prototype comes from the sites that have the class.
    """
    counts = torch.bincount(labels, minlength=n_classes).float()
    return (counts / counts.sum()).log().clamp_min(ABSENT_LOG_PRIOR)


ABSENT_LOG_PRIOR = -1e4
"""A finite stand-in for log 0: its softmax weight is exactly 0 in float32, and unlike -inf
it keeps the distillation's ``p * (log p - log q)`` at 0 rather than NaN."""


def _optimiser(
    adapter: SharedAdapter | None, head: PrivateHead | None, config: TrainConfig
) -> torch.optim.Optimizer:
    """Adam or AdamW over the trained parts, the head at its own step size when set."""
    groups = []
    if adapter is not None:
        groups.append({"params": list(adapter.parameters()), "lr": config.lr})
    if head is not None:
        groups.append({"params": list(head.parameters()), "lr": config.head_lr or config.lr})
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(
        groups,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
