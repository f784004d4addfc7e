"""The two trainable parts of FedMedCLIP: the shared adapter (FAM) and the private head.

``SharedAdapter`` is everything a site sends to the federation: the FAM and, when enabled,
a learnable offset to the class prototypes. Its state dict is exactly what the update codec
encodes and the aggregator averages. ``PrivateHead`` never leaves the site.

Text prototypes themselves are not part of the shared state: every site derives them from
the same frozen text encoder and prompts. The learnable variant stores an offset that
starts at zero, so the aggregator can create version 0 without running the text encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedmedclip.class_statistics import ClassStatistics
from fedmedclip.masked import MaskedLinear

LOGIT_SCALE = 100.0
"""One logit scale for the FAM (text) branch in training and at prediction."""


@dataclass(frozen=True)
class AdapterConfig:
    """Shape and options of the shared adapter; identical on every site and the hub."""

    dim: int
    n_classes: int
    learn_prototypes: bool = False
    class_statistics: bool = False
    margin: float = 0.0
    window: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> AdapterConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-sample standardisation over the feature dimension (no running statistics)."""
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


class FAM(nn.Module):
    """Feature adaptation module: an attention vector over the D image features."""

    def __init__(self, dim: int, *, margin: float = 0.0, window: float = 1.0) -> None:
        super().__init__()
        self.l1 = MaskedLinear(dim, dim, margin=margin, window=window)
        self.l2 = MaskedLinear(dim, dim, margin=margin, window=window)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = F.relu(standardise(self.l1(f)))
        return torch.softmax(self.l2(h), dim=-1)


class SharedAdapter(nn.Module):
    """The federated part: FAM plus the optional prototype offset and class statistics."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.fam = FAM(config.dim, margin=config.margin, window=config.window)
        if config.learn_prototypes:
            self.prototype_offset = nn.Parameter(torch.zeros(config.n_classes, config.dim))
        else:
            self.prototype_offset = None
        self.class_stats = (
            ClassStatistics(config.dim, config.n_classes) if config.class_statistics else None
        )

    def adapt(self, f: torch.Tensor) -> torch.Tensor:
        """f' = normalise(FAM(f) * f), with f L2-normalised first."""
        f = F.normalize(f, dim=-1)
        return F.normalize(self.fam(f) * f, dim=-1)

    def prototypes(self, text_prototypes: torch.Tensor) -> torch.Tensor:
        """Class prototypes (C x D), L2-normalised."""
        p = text_prototypes
        if self.prototype_offset is not None:
            p = p + self.prototype_offset
        return F.normalize(p, dim=-1)

    def class_logits(self, adapted: torch.Tensor, text_prototypes: torch.Tensor) -> torch.Tensor:
        """Logits of the FAM branch: scaled cosine similarity to the class prototypes."""
        return LOGIT_SCALE * adapted @ self.prototypes(text_prototypes).T

    def masked_layers(self) -> list[MaskedLinear]:
        return [self.fam.l1, self.fam.l2]


STANDARDISATION_BUFFERS = ("input_mean", "input_scale")
"""The head's per-site input standardisation; the identity until fitted."""


class PrivateHead(nn.Module):
    """Site-private classifier: three masked blocks (linear, BatchNorm, ReLU) then linear.

    It also holds the site's input standardisation (``input_mean``, ``input_scale``): the
    per-dimension mean and spread of the site's own L2-normalised embeddings. Subtracting
    them before the shared adapter removes what every image of the site has in common (its
    camera, scanner, staining), so the FAM and the federated class prototypes see the
    lesion rather than the hospital, and what one site learns about a class can serve
    another (``docs/method.md``, Per-site standardisation). Private like the rest of the
    head: it describes the site's data and is never sent.
    """

    def __init__(
        self, dim: int, n_classes: int, *, margin: float = 0.0, window: float = 1.0
    ) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(dim))
        self.register_buffer("input_scale", torch.ones(dim))
        blocks: list[nn.Module] = []
        for _ in range(3):
            blocks += [MaskedLinear(dim, dim, margin=margin, window=window), nn.BatchNorm1d(dim)]
            blocks.append(nn.ReLU())
        self.blocks = nn.Sequential(*blocks)
        self.out = MaskedLinear(dim, n_classes, margin=margin, window=window)

    def forward(self, adapted: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(adapted))

    def standardise(self, f: torch.Tensor) -> torch.Tensor:
        """The site's embeddings as the shared adapter sees them (identity until fitted)."""
        return (F.normalize(f, dim=-1) - self.input_mean) / self.input_scale

    @torch.no_grad()
    def fit_standardisation(self, features: torch.Tensor, eps: float = 1e-6) -> None:
        """Set the standardisation from the site's training embeddings (N x D).

        A plain mean over the site's images, not a class-balanced one: on the benchmark's
        federations the class-balanced mean, taken over classes of a handful of images,
        was the noisier estimate (``docs/method.md``). Fewer than two images: identity.
        """
        if len(features) < 2:
            self.input_mean.zero_()
            self.input_scale.fill_(1.0)
            return
        f = F.normalize(features.to(self.input_mean.device, torch.float32), dim=-1)
        self.input_mean.copy_(f.mean(dim=0))
        self.input_scale.copy_(f.std(dim=0, unbiased=False).clamp_min(eps))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # Heads stored before the standardisation existed load as the identity.
        for name in STANDARDISATION_BUFFERS:
            state_dict.setdefault(
                prefix + name, getattr(self, name).clone().fill_(name == "input_scale")
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def masked_layers(self) -> list[MaskedLinear]:
        return [m for m in self.modules() if isinstance(m, MaskedLinear)]


def adapter_inputs(head: PrivateHead | None, features: torch.Tensor) -> torch.Tensor:
    """What the shared adapter is given: the head's standardisation of ``features`` (the
    raw embeddings when there is no head), the same in training and at prediction."""
    return features if head is None else head.standardise(features)


def build_adapter(config: AdapterConfig, seed: int = 0) -> SharedAdapter:
    """Deterministic initial adapter: every party building version 0 gets the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SharedAdapter(config)


def build_head(config: AdapterConfig, seed: int = 0) -> PrivateHead:
    """A fresh private head for a site."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PrivateHead(config.dim, config.n_classes, margin=config.margin, window=config.window)


def adapter_state(adapter: SharedAdapter) -> dict[str, torch.Tensor]:
    """Detached float32 CPU copy of the shared state (what the federation exchanges)."""
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in adapter.state_dict().items()}


def expected_shapes(config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the shared state, used to validate received updates."""
    adapter = SharedAdapter(config)
    return {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
