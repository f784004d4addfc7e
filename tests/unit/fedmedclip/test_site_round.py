"""The site round: the node's and the simulator's are one function, built one way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedmedclip.backbone import Backbone, cached_backbone
from fedmedclip.ensemble import Combination
from fedmedclip.enums import OptimizerSettings
from fedmedclip.heads import new_local_head
from fedmedclip.model import adapter_state, build_adapter, build_head
from fedmedclip.prediction import Temperatures
from fedmedclip.schemas import FamSettings, TaskSpec, TrainingHints
from fedmedclip.simulator import Federation, SimulationConfig
from fedmedclip.simulator.base import local_seed
from fedmedclip.simulator.federation import Site, SplitData
from fedmedclip.simulator.methods import build_method
from fedmedclip.site_round import SiteFeatures, run_site_round, train_config
from fedmedclip.training import TrainConfig

SEED = 3
ROUND = 1
TASK = TaskSpec(
    class_names=["alpha", "beta", "gamma"],
    backbone="ViT-S-32",
    fam=FamSettings(learn_prototypes=True, seed=SEED),
)
"""A task with the options the simulator's FedMedCLIP runs by default (learnt prototypes and
class statistics), so that both paths train the same shared state."""


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return cached_backbone(TASK.backbone, "none", "cpu")


def _split(n: int, generator: torch.Generator) -> SplitData:
    """``n`` embeddings around one centre per class, the classes in turn."""
    dim = TASK.adapter_config().dim
    centres = torch.randn(len(TASK.class_names), dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % len(TASK.class_names)
    features = centres[labels] + 0.5 * torch.randn(n, dim, generator=generator)
    return SplitData([Path(f"{i}.png") for i in range(n)], features, labels)


@pytest.fixture(scope="module")
def federation(backbone: Backbone) -> Federation:
    """One site of cached embeddings, as the simulator holds it."""
    g = torch.Generator().manual_seed(1)
    site = Site("hospital", _split(48, g), _split(12, g), _split(12, g))
    return Federation(
        class_names=tuple(TASK.class_names),
        sites=[site],
        text_prototypes=backbone.text_prototypes(TASK.class_names, TASK.prompt_template),
        backbone=backbone,
        embed_seconds=0.0,
        images_encoded=0,
    )


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_simulator_runs_the_nodes_round(federation: Federation) -> None:
    """One round through the simulator's FedMedCLIP and through the node's calls (its task's
    adapter, version 0 as the hub publishes it, its first heads, ``train_config`` from the
    round's hints) on the same embeddings and seeds: the same FAM state, pruned rows and
    heads, bit for bit."""
    method = build_method("fedmedclip", federation, SimulationConfig(local_epochs=2, seed=SEED))
    base = method.global_state()
    update = method.train_site(0, ROUND)

    config = TASK.adapter_config()
    version_0 = adapter_state(build_adapter(config, seed=TASK.fam.seed))
    head_seed = local_seed(SEED, 0, 0)
    head = build_head(config, seed=head_seed)
    local = new_local_head(config, fam_seed=TASK.fam.seed, seed=head_seed)
    hints = TrainingHints(local_epochs=2)
    node = run_site_round(
        version_0,
        config,
        head,
        local,
        federation.sites[0].features(),
        federation.text_prototypes,
        train_config(hints, device="cpu", seed=local_seed(SEED, ROUND, 0)),
        calibrate_on_val=hints.calibrate,
    )

    assert method.adapter_config == config and _equal(base, version_0)
    assert update.state is not None and not _equal(update.state, base)  # the round trained
    assert _equal(update.state, node.training.adapter_state)
    assert _equal(dict(update.omit_rows), node.training.pruned_rows)
    assert update.n_samples == node.training.n_samples == 48
    assert not _equal(head.state_dict(), build_head(config, seed=head_seed).state_dict())
    assert _equal(method.heads[0].state_dict(), head.state_dict())
    assert _equal(method.local_heads[0].head.state_dict(), local.head.state_dict())


def test_the_round_reports_its_epochs_and_steps_and_scores_the_site(
    federation: Federation,
) -> None:
    config = TASK.adapter_config()
    site = federation.sites[0]
    seen: list[object] = []
    for local in (new_local_head(config, fam_seed=SEED, seed=0), None):
        seen.clear()
        result = run_site_round(
            adapter_state(build_adapter(config, seed=SEED)),
            config,
            build_head(config),
            local,
            site.features(),
            federation.text_prototypes,
            TrainConfig(epochs=2),
            calibrate_on_val=True,
            on_epoch=lambda epoch, epochs, loss: seen.append((epoch, epochs)),
            on_phase=seen.append,
        )
        steps = ["training the local head", "evaluating"] if local else ["evaluating"]
        assert seen == [(1, 2), (2, 2), *steps]
    assert result.metrics["train_loss"] == result.training.epoch_losses[-1]
    assert {"val_accuracy", "test_accuracy", "test_balanced_accuracy"} <= set(result.metrics)
    assert result.temperatures.fam != 1.0  # calibrated on validation, as asked


def test_a_round_without_a_validation_split_keeps_the_default_combination(
    federation: Federation,
) -> None:
    config = TASK.adapter_config()
    site = federation.sites[0].features()
    empty = torch.empty(0, site.x_val.shape[1]), torch.empty(0, dtype=torch.long)
    data = SiteFeatures(site.x_train, site.y_train, *empty, site.x_test, site.y_test)
    result = run_site_round(
        adapter_state(build_adapter(config)),
        config,
        build_head(config),
        new_local_head(config, fam_seed=0, seed=0),
        data,
        federation.text_prototypes,
        TrainConfig(epochs=1),
        calibrate_on_val=True,
    )
    assert result.combination == Combination() and result.temperatures == Temperatures()
    assert "test_accuracy" in result.metrics and "val_accuracy" not in result.metrics


HINTS = TrainingHints(
    local_epochs=3,
    lr=0.01,
    batch_size=16,
    kd_weight=0.5,
    kd_temperature=4.0,
    adaptive_kd=False,
    prune_weight=0.2,
)


def test_the_train_config_takes_every_hint() -> None:
    config = train_config(HINTS, device="cpu")
    assert (config.epochs, config.lr, config.batch_size) == (3, 0.01, 16)
    assert (config.kd_weight, config.kd_temperature, config.adaptive_kd) == (0.5, 4.0, False)
    assert (config.prune_weight, config.seed, config.device) == (0.2, 0, "cpu")
    assert config.standardise_inputs and config.balanced_loss


def test_the_reference_settings_keep_the_hints_loss_weights() -> None:
    config = train_config(
        HINTS, device="cpu", seed=7, round_index=4, settings=OptimizerSettings.reference
    )
    reference = TrainConfig.reference(4)
    assert (config.epochs, config.lr, config.optimizer) == (1, reference.lr, "adam")
    assert (config.kd_weight, config.kd_temperature, config.prune_weight) == (0.5, 4.0, 0.2)
    assert config.seed == 7
