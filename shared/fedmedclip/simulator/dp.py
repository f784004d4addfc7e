"""Client-side differential privacy in the simulator: what each site does before upload.

Every site of a run clips and noises its delta with :func:`fedmedclip.privacy.privatize_delta`
and keeps its own :class:`~fedmedclip.privacy.PrivacyAccountant`, exactly as a hospital node
would (``docs/privacy.md``). The one difference is the noise source: here it is seeded from
the run's seed, the site and the round, so a simulation can be repeated number for number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

from fedmedclip.privacy import (
    DPConfig,
    PrivacyAccountant,
    epsilon_per_round,
    noise_share,
    privatize_delta,
)


def noise_seed(seed: int, site_index: int, round_index: int) -> int:
    """A reproducible noise seed per (run, site, round), apart from the training seeds.

    SIMULATION ONLY: noise anyone can recompute from the run's seed protects nothing. A real
    site must let ``privatize_delta`` seed its generator from the operating system. Hashing
    keeps the noise stream unrelated to ``local_seed``, which seeds the local training.
    """
    digest = hashlib.sha256(f"dp-noise/{seed}/{site_index}/{round_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch accepts it


class SitePrivacy:
    """The sites' DP state for one run: privatises deltas and accounts every update sent."""

    def __init__(
        self, config: DPConfig, seed: int, n_sites: int, *, distributed: bool = False
    ) -> None:
        self.config = config
        # Distributed DP: each site adds its share; the accountant sees the central noise.
        self.site_config = noise_share(config, n_sites) if distributed else config
        self.seed = seed
        self.accountants = [PrivacyAccountant() for _ in range(n_sites)]
        self.epsilon_per_round = epsilon_per_round(config.noise_multiplier, config.delta)

    def privatize(
        self, delta: Mapping[str, torch.Tensor], site_index: int, round_index: int
    ) -> dict[str, torch.Tensor]:
        """Clip and noise one site's delta, and charge the round to that site's budget."""
        generator = torch.Generator().manual_seed(noise_seed(self.seed, site_index, round_index))
        noisy = privatize_delta(delta, self.site_config, generator)
        self.accountants[site_index].step(self.config.noise_multiplier)
        return noisy

    def epsilon(self) -> float:
        """Cumulative epsilon so far: the largest over sites (equal when all take part)."""
        return max(accountant.epsilon(self.config.delta) for accountant in self.accountants)
