"""A site's private heads between rounds: re-paired with a new FAM, sampled for re-pairing
elsewhere, the local head trained alone beside the federated one, and the two packed into
the tensors the site's model store keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedmedclip.model import AdapterConfig, PrivateHead, SharedAdapter, build_adapter, build_head
from fedmedclip.prediction import branch_logits
from fedmedclip.training import TrainConfig, TrainResult, train_local


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


def new_local_head(config: AdapterConfig, *, fam_seed: int, seed: int) -> LocalHead:
    """A site's first local head: a fresh head (``seed``) on version 0 of the FAM, rebuilt
    from the federation's seed ``fam_seed``. A site seeds it as its first federated head, so
    the two start alike and differ only by what the federation taught one of them."""
    return LocalHead(build_adapter(config, seed=fam_seed), build_head(config, seed=seed))


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
