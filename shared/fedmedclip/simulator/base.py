"""The interface every simulated method implements, so one rounds loop drives them all."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from fedmedclip.ensemble import fit_temperature
from fedmedclip.enums import SimulationMethod
from fedmedclip.simulator.config import SimulationConfig
from fedmedclip.simulator.dp import SitePrivacy
from fedmedclip.simulator.federation import Federation
from fedmedclip.simulator.transport import CodecTransport, Fp32Transport

State = dict[str, torch.Tensor]


@dataclass
class LocalUpdate:
    """One site's result of a round: its new shared state (None when nothing is shared)."""

    state: State | None
    n_samples: int
    omit_rows: Mapping[str, torch.Tensor] = field(default_factory=dict)


def local_seed(seed: int, round_index: int, site_index: int) -> int:
    """A distinct, reproducible seed per (run, round, site)."""
    return seed * 1_000_003 + round_index * 1009 + site_index


class Method(ABC):
    """A way to learn from the federation. ``federated`` methods exchange a state with
    the hub every round through ``transport``; the others train (or not) on their own.

    With DP on (``config.dp``), ``privacy`` holds the sites' noise and accountants for the
    run; it stays None for a method that sends nothing, since there is nothing to protect.
    """

    name: ClassVar[SimulationMethod]
    federated: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    dp_supported: ClassVar[bool] = True
    transport: CodecTransport | Fp32Transport

    def __init__(self, federation: Federation, config: SimulationConfig) -> None:
        self.check_config(config)
        self.federation = federation
        self.config = config
        dp = config.dp
        self.privacy = (
            SitePrivacy(
                dp,
                config.seed,
                len(federation.sites),
                distributed=config.dp_mode == "distributed",
            )
            if dp is not None and self.federated
            else None
        )

    @classmethod
    def check_config(cls, config: SimulationConfig) -> None:
        """Refuse settings this method cannot honour, before any work is done."""
        if config.dp is not None and not cls.dp_supported:
            raise ValueError(
                f"{cls.name} cannot run with differential privacy: DP applies to the FAM delta "
                "of the adapter methods; run it without the DP settings"
            )

    def global_state(self) -> State:
        """The current global shared state (federated methods only)."""
        raise NotImplementedError(f"{self.name} has no global state")

    def set_global(self, state: State) -> None:
        raise NotImplementedError(f"{self.name} has no global state")

    def train_site(self, site_index: int, round_index: int) -> LocalUpdate:
        """One local round at a site, starting from the global state."""
        raise NotImplementedError(f"{self.name} does not train")

    @abstractmethod
    def predict(self, site_index: int, split: str) -> torch.Tensor:
        """Class probabilities (N x C) for one split of one site."""

    def options(self) -> dict:
        """What distinguishes this variant, for the report."""
        return {}

    def learning_rate(self) -> float | None:
        """The local learning rate this run uses (None when nothing trains)."""
        return self.config.lr if self.trains else None

    def _calibrated(
        self, logits_of: Callable[[str], torch.Tensor], site_index: int, split: str
    ) -> torch.Tensor:
        """softmax(logits / T) for a single-branch method.

        ``logits_of(split name)`` gives the site's logits; with ``calibrate`` T is fitted on
        the site's validation split (temperature scaling changes confidence, not the
        predicted class, so only the calibration metrics move).
        """
        temperature = 1.0
        if self.config.calibrate:
            val_labels = self.federation.sites[site_index].val.labels
            temperature = fit_temperature(logits_of("val"), val_labels)
        return torch.softmax(logits_of(split) / temperature, dim=-1)
