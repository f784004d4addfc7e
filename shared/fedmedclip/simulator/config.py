"""Settings of one simulation run, shared by every method so comparisons stay fair.

Each setting is declared once, here: ``fedmedclip simulate`` offers every field as an option
with this default and this help text (:mod:`fedmedclip.config_fields`). The module imports
nothing heavy, so the command's ``--help`` is built from it without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from fedmedclip import training_defaults as defaults
from fedmedclip.config_fields import Topic, check_minimums, coerce_choices, setting
from fedmedclip.enums import (
    AggregationRule,
    DPMode,
    OptimizerSettings,
    SimulationCodec,
    SimulationCombination,
)

if TYPE_CHECKING:
    from fedmedclip.privacy import DPConfig

METHOD, PRIVACY, RUN = Topic.method, Topic.privacy, Topic.run


@dataclass(frozen=True)
class SimulationConfig:
    """Rounds, local training, communication and privacy options.

    ``lr`` drives the adapter methods, ``fedavg_lr`` the encoder fine-tuning: fine-tuning a
    transformer needs a far smaller step.

    Secure aggregation with ``dp_mode="distributed"`` replaces client-side DP by distributed
    DP: each of the K sites clips its update and adds noise of standard deviation
    ``noise_multiplier * clip_norm / sqrt(K)``, so the sum carries the central noise
    ``noise_multiplier * clip_norm`` and the mean ``1/sqrt(K)`` as much noise as with
    client-side DP at the same epsilon (:mod:`fedmedclip.privacy`, ``docs/privacy.md``).
    """

    rounds: int = setting(10, "Federated rounds.", topic=METHOD, minimum=1)
    local_epochs: int = setting(
        defaults.LOCAL_EPOCHS, "Local epochs per round.", topic=METHOD, minimum=1
    )
    lr: float = setting(
        defaults.LR, "Learning rate of the adapter methods.", topic=METHOD, minimum=0
    )
    batch_size: int = setting(defaults.BATCH_SIZE, "Local batch size.", topic=METHOD, minimum=2)
    codec: SimulationCodec = setting(
        SimulationCodec.int4, "Update encoding on the wire.", topic=METHOD
    )
    error_feedback: bool = setting(
        False, "Sites carry what quantisation lost over to their next update.", topic=METHOD
    )
    aggregation_rule: AggregationRule = setting(
        AggregationRule.weighted_mean,
        "Aggregation rule at the hub.",
        topic=METHOD,
        flag="--aggregation",
    )
    learn_prototypes: bool = setting(
        True, "FedMedCLIP: learn class prototypes, federated with the FAM.", topic=METHOD
    )
    class_statistics: bool = setting(
        True,
        "FedMedCLIP: sites share class statistics with their update and may choose the "
        "discriminant built from them (fedmedclip.class_statistics).",
        topic=METHOD,
    )
    calibrate: bool = setting(
        defaults.CALIBRATE, "Fit each branch's temperature on the validation split.", topic=METHOD
    )
    adaptive_kd: bool = setting(
        defaults.ADAPTIVE_KD, "FedMedCLIP: entropy-weighted distillation.", topic=METHOD
    )
    kd_weight: float = setting(
        defaults.KD_WEIGHT,
        "FedMedCLIP: weight of the distillation loss (the paper's lambda).",
        topic=METHOD,
    )
    prune_weight: float = setting(
        defaults.PRUNE_WEIGHT,
        "Pruning pressure on the masked layers' row thresholds.",
        topic=METHOD,
        minimum=0,
    )
    standardise_inputs: bool = setting(
        True, "Each site standardises its embeddings with its own mean and spread.", topic=METHOD
    )
    balanced_loss: bool = setting(
        True,
        "Add the site's log class prior to the logits in training (balanced softmax).",
        topic=METHOD,
    )
    seed: int = setting(0, "Seed of splits, initial weights and training.", topic=RUN)
    device: str = setting("cpu", "auto, cpu, cuda or cuda:N.", topic=RUN)
    lr_factors: tuple[float, ...] = setting(
        (1.0,),
        "Factors of the learning rate to try, comma-separated (e.g. 0.3,1,3): every trained "
        "method runs once per factor and the run with the best mean validation balanced "
        "accuracy is kept, so the test split never picks a hyper-parameter.",
        topic=METHOD,
        flag="--lr-search",
    )
    fedavg_blocks: int = setting(
        2, "FedAvg: last vision blocks fine-tuned.", topic=METHOD, minimum=1
    )
    fedavg_lr: float = setting(1e-4, "FedAvg: encoder learning rate.", topic=METHOD, minimum=0)
    fedavg_batch_size: int = setting(32, "FedAvg: local batch size.", topic=METHOD, minimum=2)
    fedavg_prefix_cache: bool = setting(
        True,
        "FedAvg: compute the frozen blocks' output once (the same numbers, far less time); "
        "off runs the whole encoder at every step, as a deployment that augments images must.",
        topic=METHOD,
    )
    dp_clip_norm: float | None = setting(
        None,
        "Differential privacy: clip each site's whole update to this L2 norm (with "
        "--dp-noise-multiplier; see docs/privacy.md).",
        topic=PRIVACY,
    )
    dp_noise_multiplier: float | None = setting(
        None, "Differential privacy: noise standard deviation over the clip norm.", topic=PRIVACY
    )
    dp_delta: float = setting(
        1e-5, "Differential privacy: delta of the reported epsilon.", topic=PRIVACY
    )
    combination: SimulationCombination = setting(
        SimulationCombination.choose,
        "FedMedCLIP: how each site combines its branches: choose (on validation), entropy "
        "(the paper's ensemble), head or fam.",
        topic=METHOD,
    )
    local_head: bool = setting(
        True,
        "FedMedCLIP, with --combination choose: each site also trains a head alone on the "
        "version-0 FAM and keeps a federated option only where it beats that head on "
        "validation by more than the noise.",
        topic=METHOD,
    )
    settings: OptimizerSettings = setting(
        OptimizerSettings.ours,
        "Optimiser settings: ours, or reference (the authors'; docs/method.md).",
        topic=METHOD,
    )
    dp_mode: DPMode = setting(
        DPMode.local,
        "Differential privacy: 'local' (each site noises its own update fully) or "
        "'distributed' (each site adds its share of the central noise; needs "
        "--secure-aggregation).",
        topic=PRIVACY,
    )
    server_lr: float = setting(
        1.0,
        "Scale the aggregated delta before applying it (0 < x <= 1; post-processing, no "
        "privacy cost); under DP a small value keeps the noise from saturating the FAM "
        "(see docs/privacy.md).",
        topic=PRIVACY,
    )
    secure_aggregation: bool = setting(
        False,
        "Run every federated round through the secure-aggregation protocol "
        "(fedmedclip.secagg): the hub learns only the weighted mean.",
        topic=PRIVACY,
        flag="--secure-aggregation",
    )

    def __post_init__(self) -> None:
        coerce_choices(self)
        check_minimums(self)
        if self.lr <= 0 or self.fedavg_lr <= 0 or not self.lr_factors:
            raise ValueError("learning rates and lr_factors must be positive and non-empty")
        if any(f <= 0 for f in self.lr_factors):
            raise ValueError("lr_factors must be positive")
        if (self.dp_clip_norm is None) != (self.dp_noise_multiplier is None):
            raise ValueError(
                "differential privacy needs both dp_clip_norm and dp_noise_multiplier, or neither"
            )
        if not 0 < self.server_lr <= 1:
            raise ValueError(f"server_lr must be in (0, 1], got {self.server_lr!r}")
        if self.dp_mode == DPMode.distributed and not self.secure_aggregation:
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
        # Imported here: fedmedclip.privacy loads torch, and this module must not.
        from fedmedclip.privacy import DPConfig

        return DPConfig(self.dp_clip_norm, self.dp_noise_multiplier, self.dp_delta)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lr_factors"] = list(self.lr_factors)
        return data
