"""Settings of one simulation run, shared by every method so comparisons stay fair."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fedmedclip.enums import (
    AggregationRule,
    DPMode,
    OptimizerSettings,
    SimulationCodec,
    SimulationCombination,
    parse_choice,
)
from fedmedclip.privacy import DPConfig
from fedmedclip.training import DEFAULT_PRUNE_WEIGHT


@dataclass(frozen=True)
class SimulationConfig:
    """Rounds, local training and communication options.

    ``lr`` drives the adapter methods; ``fedavg_lr`` the encoder fine-tuning (fine-tuning a
    transformer needs a far smaller step). ``lr_factors`` turns on a learning-rate search:
    every trained method runs once per factor times its base rate and the run with the best
    mean validation balanced accuracy is kept, so the test split never picks a hyper-parameter.

    ``class_statistics``: FedMedCLIP's sites share class statistics with their update and
    may choose the discriminant built from them (:mod:`fedmedclip.class_statistics`).

    ``local_head`` (used with ``combination="choose"`` only): each FedMedCLIP site also trains its
    local head, alone on the version-0 FAM, and keeps a federated option only where it
    beats that head on validation by more than the noise (``fedmedclip.heads.LocalHead``).

    ``dp_clip_norm`` and ``dp_noise_multiplier`` (set both or neither) turn on client-side
    differential privacy: each site clips and noises its delta before upload (see
    :mod:`fedmedclip.privacy` and ``docs/privacy.md``); ``dp_delta`` is the delta the
    reported epsilon is computed at.

    ``secure_aggregation`` runs every federated round through the secure-aggregation
    protocol (:mod:`fedmedclip.secagg`): the hub sees only the weighted mean. With it,
    ``dp_mode="distributed"`` replaces client-side DP by distributed DP: each of the K sites
    clips its update and adds noise of standard deviation ``noise_multiplier * clip_norm /
    sqrt(K)``, so the sum carries the central noise ``noise_multiplier * clip_norm`` and
    the mean ``1/sqrt(K)`` as much noise as with client-side DP at the same epsilon.

    ``server_lr`` scales the aggregated delta before the hub applies it (post-processing:
    no privacy cost). Under DP it keeps the noise that accumulates in the global FAM from
    saturating its softmax attention (``docs/privacy.md``); 1 is plain FedAvg.
    """

    rounds: int = 10
    local_epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    codec: SimulationCodec = SimulationCodec.int4
    error_feedback: bool = False
    aggregation_rule: AggregationRule = AggregationRule.weighted_mean
    learn_prototypes: bool = True
    class_statistics: bool = True
    calibrate: bool = False
    adaptive_kd: bool = True
    kd_weight: float = 0.04
    prune_weight: float = DEFAULT_PRUNE_WEIGHT
    standardise_inputs: bool = True
    balanced_loss: bool = True
    seed: int = 0
    device: str = "cpu"
    lr_factors: tuple[float, ...] = (1.0,)
    fedavg_blocks: int = 2
    fedavg_lr: float = 1e-4
    fedavg_batch_size: int = 32
    fedavg_prefix_cache: bool = True
    dp_clip_norm: float | None = None
    dp_noise_multiplier: float | None = None
    dp_delta: float = 1e-5
    combination: str = "choose"
    local_head: bool = True
    settings: str = "ours"
    dp_mode: DPMode = DPMode.local
    server_lr: float = 1.0
    secure_aggregation: bool = False

    def __post_init__(self) -> None:
        parse_choice(OptimizerSettings, self.settings, "settings")
        parse_choice(SimulationCombination, self.combination, "combination")
        if self.rounds < 1:
            raise ValueError("rounds must be at least 1")
        if self.local_epochs < 1:
            raise ValueError("local_epochs must be at least 1")
        # Plain strings are accepted (and kept: a member equals its string); others fail here.
        parse_choice(SimulationCodec, self.codec, "codec")
        parse_choice(AggregationRule, self.aggregation_rule, "aggregation rule")
        if self.lr <= 0 or self.fedavg_lr <= 0 or not self.lr_factors:
            raise ValueError("learning rates and lr_factors must be positive and non-empty")
        if any(f <= 0 for f in self.lr_factors):
            raise ValueError("lr_factors must be positive")
        if self.prune_weight < 0:
            raise ValueError("prune_weight must be non-negative")
        if self.fedavg_blocks < 1:
            raise ValueError("fedavg_blocks must be at least 1")
        if (self.dp_clip_norm is None) != (self.dp_noise_multiplier is None):
            raise ValueError(
                "differential privacy needs both dp_clip_norm and dp_noise_multiplier, or neither"
            )
        if not 0 < self.server_lr <= 1:
            raise ValueError(f"server_lr must be in (0, 1], got {self.server_lr!r}")
        parse_choice(DPMode, self.dp_mode, "dp_mode")
        if self.dp_mode == "distributed" and not self.secure_aggregation:
            raise ValueError(
                "distributed DP needs secure aggregation: without it the hub sees each "
                "site's update with only its share of the noise"
            )
        if self.secure_aggregation and self.aggregation_rule != AggregationRule.weighted_mean:
            raise ValueError(
                "secure aggregation reveals only the weighted mean; it cannot run the "
                f"{self.aggregation_rule} aggregation rule"
            )
        # Building the DPConfig checks every DP value; with DP off only dp_delta is left.
        if self.dp is None and not 0 < self.dp_delta < 1:
            raise ValueError(f"dp_delta must be in (0, 1), got {self.dp_delta!r}")

    @property
    def dp(self) -> DPConfig | None:
        """The sites' DP settings, or None when differential privacy is off."""
        if self.dp_clip_norm is None or self.dp_noise_multiplier is None:
            return None
        return DPConfig(self.dp_clip_norm, self.dp_noise_multiplier, self.dp_delta)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lr_factors"] = list(self.lr_factors)
        return data
