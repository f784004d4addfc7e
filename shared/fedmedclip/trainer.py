"""Local training over cached features: FAM + private head, the site's round of work.

The frozen encoders are never run here: the inputs are embeddings from the feature cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.nn import functional as F

from fedmedclip.ensemble import (
    Combination,
    CombinationChoice,
    EnsembleOutput,
    choose_combination,
    fit_temperature,
)
from fedmedclip.losses import adaptive_distillation_loss, prototype_contrastive_loss
from fedmedclip.model import (
    AdapterConfig,
    PrivateHead,
    SharedAdapter,
    adapter_state,
    build_adapter,
    build_head,
)
from fedmedclip.pruning import DEFAULT_PRUNE_WEIGHT


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

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    head_lr: float | None = None
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    optimizer: Literal["adamw", "adam"] = "adamw"
    kd_weight: float = 0.04
    kd_temperature: float = 2.0
    adaptive_kd: bool = True
    prune_weight: float = DEFAULT_PRUNE_WEIGHT
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
    x_all = _inputs(head, features.to(device))
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


def _inputs(head: PrivateHead | None, features: torch.Tensor) -> torch.Tensor:
    """What the shared adapter is given: the head's standardisation of ``features``."""
    return features if head is None else head.standardise(features)


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


@torch.no_grad()
def refresh_head_statistics(
    adapter: SharedAdapter, head: PrivateHead, features: torch.Tensor, batch_size: int = 4096
) -> None:
    """Re-estimate the head's BatchNorm running statistics on local features, under ``adapter``.

    Why: running statistics are an exponential average of the last few training batches,
    so after a short local round they lag the data, and after aggregation they describe the
    site's local FAM rather than the global FAM the head is then used with. CLIP embeddings
    are nearly collinear, so the class signal is small next to that mismatch and the head's
    predictions flip from round to round (measured with the simulator: local-only test
    accuracy swinging 0.55-0.77 instead of a steady 0.83). A forward pass over the site's
    training features with cumulative averaging fixes it; nothing is trained and no data
    leaves the site. Call it whenever the head is paired with a new global adapter.
    """
    if len(features) < 2:
        return  # BatchNorm cannot estimate a variance from one sample
    norms = [m for m in head.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    device = next(adapter.parameters()).device
    adapter.eval()
    head.train()
    for chunk in features.split(batch_size):
        if len(chunk) > 1:
            head(adapter.adapt(head.standardise(chunk.to(device))))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    head.eval()


PAIRING_SAMPLE_SIZE = 4096
"""Training features kept with a head: plenty to estimate BatchNorm means and variances."""


def pairing_sample(
    features: torch.Tensor, limit: int = PAIRING_SAMPLE_SIZE, seed: int = 0
) -> torch.Tensor:
    """A seeded subsample of at most ``limit`` rows of the site's training features.

    Stored beside the head (never sent anywhere), it lets whoever serves the head re-pair
    it with a newer global FAM by :func:`refresh_head_statistics`, without the images or
    the backbone.
    """
    features = features.detach().float().cpu()
    if len(features) <= limit:
        return features.clone()
    rows = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    return features[rows[:limit].sort().values].clone()


@torch.no_grad()
def branch_logits(
    adapter: SharedAdapter,
    head: PrivateHead | None,
    features: torch.Tensor,
    text_prototypes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the FAM branch and of the head (None without a head), in eval mode."""
    adapter.eval()
    device = next(adapter.parameters()).device
    if head is not None:
        head.to(device)
    adapted = adapter.adapt(_inputs(head, features.to(device)))
    fam_logits = adapter.class_logits(adapted, text_prototypes.to(device)).cpu()
    if head is None:
        return fam_logits, None
    head.eval()
    return fam_logits, head(adapted).cpu()


@torch.no_grad()
def statistics_logits(
    adapter: SharedAdapter, head: PrivateHead, features: torch.Tensor
) -> torch.Tensor | None:
    """Logits of the federated class statistics' discriminant on the site's standardised
    embeddings; None when the global model holds none (see ``fedmedclip.class_statistics``)."""
    if adapter.class_stats is None:
        return None
    head.to(next(adapter.parameters()).device)
    out = adapter.class_stats.logits(head.standardise(features.to(head.input_mean.device)))
    return None if out is None else out.cpu()


@dataclass
class LocalHead:
    """The site's local head: what it would have without the federation.

    A second private head, trained alone on the frozen version-0 FAM (``train_local`` with
    ``train_adapter=False``, exactly the ``local`` baseline of the simulator). It never
    sees the global FAM nor distils from it, so it is a true "training alone" candidate
    of the site's combination choice, the one a federated option must beat. Nothing of
    it is sent; version 0 is rebuilt from the task's seed wherever the head is used.
    """

    adapter: SharedAdapter
    head: PrivateHead

    def train(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        text_prototypes: torch.Tensor,
        config: TrainConfig,
    ) -> TrainResult:
        """One local round of the head, then its normalisation statistics refreshed."""
        result = train_local(
            self.adapter,
            self.head,
            features,
            labels,
            text_prototypes,
            config,
            train_adapter=False,
        )
        refresh_head_statistics(self.adapter, self.head, features)
        return result

    def to(self, device: torch.device | str) -> LocalHead:
        """Move both parts to ``device`` (in place) and return self."""
        self.adapter.to(device)
        self.head.to(device)
        return self

    def logits(self, features: torch.Tensor, text_prototypes: torch.Tensor) -> torch.Tensor:
        """The local head's logits for embeddings (N x D)."""
        logits = branch_logits(self.adapter, self.head, features, text_prototypes)[1]
        assert logits is not None  # a head was given
        return logits


LOCAL_HEAD_PREFIX = "local."
"""Name prefix of the local head's tensors in a stored head (beside the federated head's)."""


def pack_heads(head: PrivateHead, local: LocalHead | None) -> dict[str, torch.Tensor]:
    """The tensors a site stores for its heads: the federated head's, then the local
    head's under :data:`LOCAL_HEAD_PREFIX` (CPU copies)."""
    tensors = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    if local is not None:
        for name, value in local.head.state_dict().items():
            tensors[LOCAL_HEAD_PREFIX + name] = value.detach().cpu().clone()
    return tensors


def unpack_heads(
    tensors: dict[str, torch.Tensor], config: AdapterConfig, seed: int
) -> tuple[PrivateHead, LocalHead | None]:
    """The federated head and, when stored, the local head paired with the version-0
    adapter built from ``seed`` (the task's). Raises RuntimeError when a head does not
    fit ``config`` (``load_state_dict``'s error)."""
    own = {k: v for k, v in tensors.items() if not k.startswith(LOCAL_HEAD_PREFIX)}
    alone = {
        k.removeprefix(LOCAL_HEAD_PREFIX): v
        for k, v in tensors.items()
        if k.startswith(LOCAL_HEAD_PREFIX)
    }
    head = build_head(config)
    head.load_state_dict(own)
    if not alone:
        return head, None
    local = LocalHead(build_adapter(config, seed=seed).eval(), build_head(config))
    local.head.load_state_dict(alone)
    local.head.eval()
    return head, local


@dataclass(frozen=True)
class Temperatures:
    """Per-branch temperatures applied before the entropy weighting (1 = uncalibrated)."""

    fam: float = 1.0
    head: float = 1.0


def calibrate(
    adapter: SharedAdapter,
    head: PrivateHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
) -> Temperatures:
    """Fit each branch's temperature on the local validation split."""
    fam_logits, head_logits = branch_logits(adapter, head, features, text_prototypes)
    assert head_logits is not None
    return Temperatures(fit_temperature(fam_logits, labels), fit_temperature(head_logits, labels))


def choose(
    adapter: SharedAdapter,
    head: PrivateHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    temperatures: Temperatures = Temperatures(),
    local: LocalHead | None = None,
) -> CombinationChoice:
    """The site's combination of its branches (and its local head, when given), chosen on
    its validation split."""
    fam_logits, head_logits = branch_logits(adapter, head, features, text_prototypes)
    assert head_logits is not None
    return choose_combination(
        fam_logits,
        head_logits,
        labels,
        stats_logits=statistics_logits(adapter, head, features),
        local_logits=None if local is None else local.logits(features, text_prototypes),
        fam_temperature=temperatures.fam,
        head_temperature=temperatures.head,
    )


def predict(
    adapter: SharedAdapter,
    head: PrivateHead,
    features: torch.Tensor,
    text_prototypes: torch.Tensor,
    temperatures: Temperatures = Temperatures(),
    combination: Combination = Combination(),
    local: LocalHead | None = None,
) -> EnsembleOutput:
    """Prediction for embeddings (N x D): the branches under ``combination``."""
    fam_logits, head_logits = branch_logits(adapter, head, features, text_prototypes)
    assert head_logits is not None
    return combination.apply(
        fam_logits,
        head_logits,
        stats_logits=statistics_logits(adapter, head, features),
        local_logits=None if local is None else local.logits(features, text_prototypes),
        fam_temperature=temperatures.fam,
        head_temperature=temperatures.head,
    )
