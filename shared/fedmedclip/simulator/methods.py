"""The methods the simulator compares, on the same cached embeddings.

* ``fedmedclip``: shared FAM (federated through the update codec) + private head per site,
  trained with contrastive + CE + adaptive KL by the very site round a hospital node runs
  (:func:`fedmedclip.site_round.run_site_round`); at prediction each site combines the branches
  as it chose on validation (the paper's entropy ensemble by default). Options: learnable
  class prototypes and class statistics (federated with the FAM), per-branch temperature
  calibration on validation, adaptive KD on/off.
* ``fedclip``: the shared FAM alone, contrastive loss to the text prototypes, no head.
* ``local``: a private head per site, no federation (the FAM stays at version 0).
* ``zeroshot``: cosine similarity of the raw embedding to the text prototypes, no training.

The encoder fine-tuning baseline (``fedavg``) lives in :mod:`fedmedclip.simulator.fedavg`.
Every method exposes the same small interface, so :mod:`~fedmedclip.simulator.runner`
drives them all through one rounds loop, the one that mirrors the services.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional as F

from fedmedclip.ensemble import Combination
from fedmedclip.enums import SimulationMethod, parse_choice
from fedmedclip.heads import LocalHead, new_local_head, refresh_head_statistics
from fedmedclip.model import (
    LOGIT_SCALE,
    AdapterConfig,
    SharedAdapter,
    build_adapter,
    build_head,
    expected_shapes,
)
from fedmedclip.prediction import Temperatures, branch_logits, calibrate, choose, predict
from fedmedclip.schemas import TrainingHints
from fedmedclip.simulator.base import LocalUpdate, Method, State, local_seed
from fedmedclip.simulator.config import SimulationConfig
from fedmedclip.simulator.fedavg import EncoderFedAvg
from fedmedclip.simulator.federation import Federation
from fedmedclip.simulator.transport import CodecTransport
from fedmedclip.site_round import run_site_round, train_config
from fedmedclip.training import TrainConfig, train_local


class AdapterMethod(Method):
    """Methods built from the FAM and/or private heads, trained with ``train_local``
    (FedMedCLIP: with the site round a node runs, ``run_site_round``)."""

    uses_head: ClassVar[bool]
    trains_adapter: ClassVar[bool]
    learns_prototypes: ClassVar[bool] = False
    """Whether the method takes ``learn_prototypes`` and ``class_statistics`` from the config
    (FedMedCLIP); the others keep the bare FAM."""

    def __init__(self, federation: Federation, config: SimulationConfig) -> None:
        super().__init__(federation, config)
        self.adapter_config = AdapterConfig(
            dim=federation.dim,
            n_classes=federation.n_classes,
            learn_prototypes=self.learns_prototypes and config.learn_prototypes,
            class_statistics=self.learns_prototypes and config.class_statistics,
        )
        self.device = torch.device(config.device)
        self.adapter = build_adapter(self.adapter_config, seed=config.seed).to(self.device)
        self._global = {k: v.detach().cpu().clone() for k, v in self.adapter.state_dict().items()}
        self.heads = (
            [
                build_head(self.adapter_config, seed=local_seed(config.seed, 0, i)).to(self.device)
                for i in range(len(federation.sites))
            ]
            if self.uses_head
            else []
        )
        self.transport = CodecTransport(
            config.codec,
            expected_shapes(self.adapter_config),
            error_feedback=config.error_feedback,
        )
        # What a hub would suggest for every round of this run (the simulator plays the hub).
        self.hints = TrainingHints(
            local_epochs=config.local_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            kd_weight=config.kd_weight,
            adaptive_kd=config.adaptive_kd,
            prune_weight=config.prune_weight,
            calibrate=config.calibrate,
        )

    def global_state(self) -> State:
        return self._global

    def set_global(self, state: State) -> None:
        """Install the new global state; each site then re-pairs its head with it."""
        self._global = {k: v.detach().cpu().clone() for k, v in state.items()}
        self._refresh_heads()

    def _refresh_heads(self) -> None:
        """Each site re-estimates its head's normalisation statistics under the current
        global adapter, on its own training features (see ``refresh_head_statistics``)."""
        for site_index in range(len(self.heads)):
            self._refresh_head(site_index)

    def _refresh_head(self, site_index: int) -> None:
        train = self.federation.sites[site_index].train
        refresh_head_statistics(self._global_adapter(), self.heads[site_index], train.features)

    def _global_adapter(self) -> SharedAdapter:
        self.adapter.load_state_dict(self._global)
        return self.adapter

    def train_config(self, site_index: int, round_index: int) -> TrainConfig:
        """The local round's hyper-parameters for this site and round, built from the
        run's hints as a node builds them from the hub's."""
        config = self.config
        return train_config(
            self.hints,
            device=config.device,
            seed=local_seed(config.seed, round_index, site_index),
            round_index=round_index,
            settings=config.settings,
            standardise_inputs=config.standardise_inputs,
            balanced_loss=config.balanced_loss,
        )

    def train_site(self, site_index: int, round_index: int) -> LocalUpdate:
        site = self.federation.sites[site_index]
        train_config = self.train_config(site_index, round_index)
        result = train_local(
            self._global_adapter(),
            self.heads[site_index] if self.uses_head else None,
            site.train.features,
            site.train.labels,
            self.federation.text_prototypes,
            train_config,
            train_adapter=self.trains_adapter,
        )
        if not self.federated:
            self._refresh_head(site_index)  # the adapter never changes: re-pair the head now
            return LocalUpdate(None, result.n_samples)
        return LocalUpdate(result.adapter_state, result.n_samples, result.pruned_rows)


class FedMedClip(AdapterMethod):
    """Shared FAM + private head, combined as each site chose on validation.

    With ``local_head`` each site also trains its local head (``LocalHead``: the ``local``
    baseline's head, same seeds) beside the federated one, as the incumbent of its choice.
    """

    name = SimulationMethod.fedmedclip
    federated = True
    uses_head = True
    trains_adapter = True
    learns_prototypes = True

    def __init__(self, federation: Federation, config: SimulationConfig) -> None:
        super().__init__(federation, config)
        self.local_heads: list[LocalHead] = []
        if config.local_head and config.combination == "choose":
            self.local_heads = [
                new_local_head(
                    self.adapter_config, fam_seed=config.seed, seed=local_seed(config.seed, 0, i)
                ).to(self.device)
                for i in range(len(federation.sites))
            ]

    def train_site(self, site_index: int, round_index: int) -> LocalUpdate:
        """The site's round, run by the function a hospital node runs."""
        site = self.federation.sites[site_index]
        training = run_site_round(
            self._global,
            self.adapter_config,
            self.heads[site_index],
            self._local_head(site_index),
            site.features(),
            self.federation.text_prototypes,
            self.train_config(site_index, round_index),
            calibrate_on_val=self.hints.calibrate,
        ).training
        return LocalUpdate(training.adapter_state, training.n_samples, training.pruned_rows)

    def _local_head(self, site_index: int) -> LocalHead | None:
        return self.local_heads[site_index] if self.local_heads else None

    def options(self) -> dict:
        return {
            "learn_prototypes": self.adapter_config.learn_prototypes,
            "class_statistics": self.adapter_config.class_statistics,
            "calibrate": self.config.calibrate,
            "adaptive_kd": self.config.adaptive_kd,
            "codec": self.config.codec,
            "error_feedback": self.transport.error_feedback,
            "combination": self.config.combination,
            "local_head": bool(self.local_heads),
        }

    def combination(self, site_index: int, temperatures: Temperatures) -> Combination:
        """The site's combination under the current global state (see ``combination``)."""
        if self.config.combination != "choose":
            return Combination(kind=self.config.combination)
        site = self.federation.sites[site_index]
        adapter, head = self._global_adapter(), self.heads[site_index]
        text = self.federation.text_prototypes
        return choose(
            adapter,
            head,
            site.val.features,
            site.val.labels,
            text,
            temperatures,
            self._local_head(site_index),
        ).combination

    def predict(self, site_index: int, split: str) -> torch.Tensor:
        site = self.federation.sites[site_index]
        adapter, head = self._global_adapter(), self.heads[site_index]
        text = self.federation.text_prototypes
        temperatures = (
            calibrate(adapter, head, site.val.features, site.val.labels, text)
            if self.config.calibrate
            else Temperatures()
        )
        combination = self.combination(site_index, temperatures)
        features = site.split(split).features
        return predict(
            adapter, head, features, text, temperatures, combination, self._local_head(site_index)
        ).probabilities


class FedClip(AdapterMethod):
    """FedCLIP: the shared FAM only, classified by similarity to the text prototypes."""

    name = SimulationMethod.fedclip
    federated = True
    uses_head = False
    trains_adapter = True

    def options(self) -> dict:
        return {
            "calibrate": self.config.calibrate,
            "codec": self.config.codec,
            "error_feedback": self.transport.error_feedback,
        }

    def predict(self, site_index: int, split: str) -> torch.Tensor:
        adapter, text = self._global_adapter(), self.federation.text_prototypes
        site = self.federation.sites[site_index]
        return self._calibrated(
            lambda s: branch_logits(adapter, None, site.split(s).features, text)[0],
            site_index,
            split,
        )


class LocalOnly(AdapterMethod):
    """A private head per site on the fixed version-0 FAM features; nothing is shared."""

    name = SimulationMethod.local
    uses_head = True
    trains_adapter = False

    def options(self) -> dict:
        return {"calibrate": self.config.calibrate}

    def predict(self, site_index: int, split: str) -> torch.Tensor:
        adapter, head = self._global_adapter(), self.heads[site_index]
        text, site = self.federation.text_prototypes, self.federation.sites[site_index]

        def head_logits(split_name: str) -> torch.Tensor:
            logits = branch_logits(adapter, head, site.split(split_name).features, text)[1]
            assert logits is not None  # a head was given
            return logits

        return self._calibrated(head_logits, site_index, split)


class ZeroShot(Method):
    """CLIP zero-shot: scaled cosine similarity of the frozen embedding to the prompts."""

    name = SimulationMethod.zeroshot
    trains = False

    def options(self) -> dict:
        return {"calibrate": self.config.calibrate}

    def predict(self, site_index: int, split: str) -> torch.Tensor:
        text = F.normalize(self.federation.text_prototypes, dim=-1)
        site = self.federation.sites[site_index]

        def logits(split_name: str) -> torch.Tensor:
            return LOGIT_SCALE * F.normalize(site.split(split_name).features, dim=-1) @ text.T

        return self._calibrated(logits, site_index, split)


METHOD_CLASSES: dict[SimulationMethod, type[Method]] = {
    cls.name: cls for cls in (FedMedClip, FedClip, LocalOnly, ZeroShot, EncoderFedAvg)
}


def build_method(
    name: SimulationMethod | str, federation: Federation, config: SimulationConfig
) -> Method:
    """An instance of the method called ``name``."""
    return METHOD_CLASSES[parse_choice(SimulationMethod, name, "method")](federation, config)
