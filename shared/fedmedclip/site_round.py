"""A site's local round: the one function a hospital node runs and the simulator runs for
each of its simulated sites.

From the round's base global state and the site's cached embeddings, the round trains the
shared adapter with the federated head, then the local head alone, and evaluates the
result on the site's validation and test splits: it calibrates when the round asks,
chooses how to combine the branches and scores that combination. The heads are the site's
own state and are trained in place; the new FAM state is returned for the caller to send.

The simulator calls this as Flower's simulation calls the deployed client code, so every
benchmark measures what a hospital runs; the node adds only transport, storage and progress
around it (``services/hospital_node/training.py``). Both build the round's
:class:`~fedmedclip.training.TrainConfig` with :func:`train_config`, from the
:class:`~fedmedclip.schemas.TrainingHints` a hub sends (the simulator plays the hub).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from fedmedclip.class_statistics import statistics_of
from fedmedclip.ensemble import Combination
from fedmedclip.enums import OptimizerSettings
from fedmedclip.heads import LocalHead, refresh_head_statistics
from fedmedclip.metrics import classification_metrics
from fedmedclip.model import AdapterConfig, PrivateHead, SharedAdapter, build_adapter
from fedmedclip.prediction import Temperatures, calibrate, choose, predict
from fedmedclip.schemas import TrainingHints
from fedmedclip.training import ProgressFn, TrainConfig, TrainResult, train_local

PhaseFn = Callable[[str], None]
"""``phase(name)`` when the round moves on to a step after the training epochs."""


@dataclass(frozen=True)
class SiteFeatures:
    """Cached embeddings and global label ids of the site's train / val / test splits."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass(frozen=True)
class SiteRound:
    """What a site's round produced, beside its heads (trained in place).

    ``training`` holds the new FAM state to send (``adapter_state``), the rows it pruned
    and the sample count its update weighs with; ``temperatures`` and ``combination`` are
    what the site stores with its head for the inference API; ``metrics`` (the last
    epoch's ``train_loss``, then ``val_*`` and ``test_*``, finite values only) what it
    reports with its update.
    """

    training: TrainResult
    temperatures: Temperatures
    combination: Combination
    metrics: dict[str, float]


def train_config(
    hints: TrainingHints,
    *,
    device: str,
    seed: int = 0,
    round_index: int = 1,
    settings: OptimizerSettings | str = OptimizerSettings.ours,
    standardise_inputs: bool = True,
    balanced_loss: bool = True,
) -> TrainConfig:
    """The round's training settings, the one way both a node and the simulator build them.

    The hints give the epochs, batch size, step size and loss weights. The keywords past
    ``device`` are the simulator's (a node trains with their defaults): ``seed`` for the
    shuffling, ``settings="reference"`` for the authors' optimiser in round
    ``round_index`` (:meth:`TrainConfig.reference`, which sets its own epochs, batch size
    and step sizes), and the two ablations of the per-site standardisation and the
    balanced loss.
    """
    losses = {
        "kd_weight": hints.kd_weight,
        "kd_temperature": hints.kd_temperature,
        "adaptive_kd": hints.adaptive_kd,
        "prune_weight": hints.prune_weight,
        "standardise_inputs": standardise_inputs,
        "balanced_loss": balanced_loss,
        "seed": seed,
        "device": device,
    }
    if settings == OptimizerSettings.reference:
        return TrainConfig.reference(round_index, **losses)
    return TrainConfig(
        epochs=hints.local_epochs, batch_size=hints.batch_size, lr=hints.lr, **losses
    )


def run_site_round(
    base: Mapping[str, torch.Tensor],
    adapter_config: AdapterConfig,
    head: PrivateHead,
    local: LocalHead | None,
    data: SiteFeatures,
    text_prototypes: torch.Tensor,
    config: TrainConfig,
    *,
    calibrate_on_val: bool,
    on_epoch: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
) -> SiteRound:
    """One site's round from the global state ``base``; see the module doc.

    ``local`` is the site's local head (None: the site keeps none, a simulator option).
    ``on_epoch`` follows the training epochs, ``on_phase`` the steps after them.
    """
    adapter = build_adapter(adapter_config)
    adapter.load_state_dict(base)
    result = train_local(
        adapter, head, data.x_train, data.y_train, text_prototypes, config, progress=on_epoch
    )
    if local is not None:
        # The local head: trained alone on version 0, the incumbent of the choice below.
        _report(on_phase, "training the local head")
        local.train(data.x_train, data.y_train, text_prototypes, config)
    if adapter.class_stats is not None:
        # Score the statistics branch with the federation's statistics (the base version's),
        # as they will be served; the site's own, filled for its update, would make it a
        # purely local discriminant and mislead the choice. The update is already taken.
        adapter.class_stats.load_state_dict(statistics_of(base))
    # Running statistics lag a short local round: evaluate with fresh ones (under the local
    # FAM; whoever serves the head re-pairs it with the FAM it serves, see pairing_sample).
    refresh_head_statistics(adapter, head, data.x_train)
    _report(on_phase, "evaluating")
    temperatures, combination, metrics = evaluate_site(
        adapter, head, text_prototypes, data, calibrate_on_val=calibrate_on_val, local=local
    )
    metrics = _finite({"train_loss": result.epoch_losses[-1]}) | metrics
    return SiteRound(result, temperatures, combination, metrics)


def evaluate_site(
    adapter: SharedAdapter,
    head: PrivateHead,
    text: torch.Tensor,
    data: SiteFeatures,
    *,
    calibrate_on_val: bool,
    local: LocalHead | None = None,
) -> tuple[Temperatures, Combination, dict[str, float]]:
    """Score the site's model on val and test.

    On the validation split it first calibrates (when the round asks) and then chooses how
    to combine its branches, the local head the incumbent when given
    (``fedmedclip.ensemble.choose_combination``); the scores are those of that
    combination, which the inference API then applies. Without a validation split the
    branches stay uncalibrated and combined the default way.
    """
    has_val = len(data.y_val) > 0
    temperatures = (
        calibrate(adapter, head, data.x_val, data.y_val, text)
        if calibrate_on_val and has_val
        else Temperatures()
    )
    combination = (
        choose(adapter, head, data.x_val, data.y_val, text, temperatures, local).combination
        if has_val
        else Combination()
    )
    metrics: dict[str, float] = {}
    for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
        if len(y):
            out = predict(adapter, head, x, text, temperatures, combination, local)
            scores = classification_metrics(out.probabilities.numpy(), y.numpy(), len(text))
            metrics |= {f"{split}_{name}": value for name, value in scores.items()}
    return temperatures, combination, _finite(metrics)


def _report(on_phase: PhaseFn | None, name: str) -> None:
    if on_phase is not None:
        on_phase(name)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
