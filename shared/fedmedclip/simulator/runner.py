"""The rounds loop: the same code path the services run, on one machine.

Each round every site trains from the current global state (FedMedCLIP with the site
round a hospital node runs, ``fedmedclip.site_round.run_site_round``; the other adapter
methods with ``train_local``); its delta goes through the method's transport (for
FedMedCLIP the real ``encode_update``/``decode_update``), and the hub step is
``aggregate(...)`` weighted by sample count, then ``apply_delta``. After each round every
site is evaluated on its validation and test splits with its own head and the new global
state (the head's normalisation statistics first re-estimated under that state on the
site's own training features, see ``fedmedclip.heads.refresh_head_statistics``).

With differential privacy on (``SimulationConfig.dp``), each site clips and noises its delta
before the transport and sends every row (no ``omit_rows``: the pruned-row bitmap would leak
outside the guarantee); each round record carries the epsilon spent (``docs/privacy.md``).

The reported round is the one with the best mean VALIDATION balanced accuracy (the metric
the federation is judged by; with label skew plain accuracy rewards a model that ignores a
site's rare classes); the test split is only read out at that round, never used to choose
anything (nor is the learning rate, see ``SimulationConfig.lr_factors``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from fedmedclip.aggregation import aggregate
from fedmedclip.codec import apply_delta, state_delta
from fedmedclip.enums import SimulationMethod, parse_choice
from fedmedclip.metrics import classification_metrics, mean_over_sites, rare_class_hits
from fedmedclip.simulator.base import Method
from fedmedclip.simulator.config import SimulationConfig
from fedmedclip.simulator.federation import Federation
from fedmedclip.simulator.methods import METHOD_CLASSES, build_method
from fedmedclip.simulator.secure import secure_mean

EVAL_SPLITS = ("val", "test")
SELECTION_METRIC = "balanced_accuracy"
"""What the read-out round and the learning-rate search are chosen on (validation split)."""

Metrics = dict[str, float]


@dataclass
class RoundRecord:
    """Metrics and costs after one round (round 0: a method that does not train).

    ``dp_epsilon_round`` is the epsilon one site's update of this round spends and
    ``dp_epsilon`` the cumulative epsilon after it (largest over sites); both None without DP.
    """

    round: int
    sites: dict[str, dict[str, Metrics]]
    val: Metrics
    test: Metrics
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down_per_client: int = 0
    train_seconds: float = 0.0
    seconds: float = 0.0
    dp_epsilon_round: float | None = None
    dp_epsilon: float | None = None

    @property
    def bytes_up_per_client(self) -> float:
        return sum(self.bytes_up.values()) / len(self.bytes_up) if self.bytes_up else 0.0


@dataclass
class MethodResult:
    """All rounds of one method and the round chosen on validation."""

    method: str
    options: dict
    lr: float | None
    rounds: list[RoundRecord]
    seconds: float
    lr_search: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> RoundRecord:
        """The round with the best mean validation balanced accuracy (the earliest on ties)."""
        return max(self.rounds, key=lambda r: (r.val[SELECTION_METRIC], -r.round))

    @property
    def dp_epsilon(self) -> float | None:
        """Cumulative epsilon over every round run, those after the best one included: each
        was sent, so each was spent (None without DP or when nothing was sent)."""
        return self.rounds[-1].dp_epsilon


@dataclass
class SimulationResult:
    """Every method's result plus the majority-class reference, for the report."""

    config: SimulationConfig
    federation: dict
    majority: dict
    methods: dict[str, MethodResult]


RoundCallback = Callable[[str, RoundRecord], None]


def evaluate(method: Method, federation: Federation) -> dict[str, dict[str, Metrics]]:
    """``{site: {split: metrics}}`` on validation and test, with the site's rare-class
    hits and count (classes with fewer than ``RARE_CLASS_LIMIT`` training examples there)."""
    out: dict[str, dict[str, Metrics]] = {}
    for i, site in enumerate(federation.sites):
        train_counts = torch.bincount(site.train.labels, minlength=federation.n_classes).tolist()
        out[site.name] = {}
        for split in EVAL_SPLITS:
            probabilities = method.predict(i, split).numpy()
            labels = site.split(split).labels.numpy()
            out[site.name][split] = classification_metrics(
                probabilities, labels, federation.n_classes
            ) | rare_class_hits(probabilities, labels, train_counts)
    return out


def _mean(per_site: dict[str, dict[str, Metrics]], split: str) -> Metrics:
    return mean_over_sites({site: splits[split] for site, splits in per_site.items()})


def _server_step(mean: dict[str, torch.Tensor], server_lr: float) -> dict[str, torch.Tensor]:
    return mean if server_lr == 1.0 else {k: v * server_lr for k, v in mean.items()}


def run_round(method: Method, federation: Federation, round_index: int) -> RoundRecord:
    """One federated (or local) round followed by evaluation."""
    started = time.perf_counter()
    config = method.config
    base = method.global_state() if method.federated else None
    base_version = round_index - 1
    bytes_down = method.transport.download_bytes(base, base_version) if base is not None else 0
    updates, bytes_up, train_seconds = [], {}, 0.0
    secure: dict[str, tuple[dict[str, torch.Tensor], float]] = {}
    distributed = config.dp_mode == "distributed" and method.privacy is not None
    for i, site in enumerate(federation.sites):
        t0 = time.perf_counter()
        update = method.train_site(i, round_index)
        train_seconds += time.perf_counter() - t0
        if base is not None and update.state is not None:
            delta, omit_rows = state_delta(update.state, base), update.omit_rows
            if method.privacy is not None:
                delta, omit_rows = method.privacy.privatize(delta, i, round_index), None
            if config.secure_aggregation:
                # Distributed DP weighs every site alike so that one site's influence on
                # the sum stays within the clip norm; otherwise the sample count, masked.
                secure[site.name] = (delta, 1.0 if distributed else float(update.n_samples))
                continue
            received, n_bytes = method.transport.upload(
                delta, site=i, base_version=base_version, omit_rows=omit_rows
            )
            updates.append((received, float(update.n_samples)))
            bytes_up[site.name] = n_bytes
    if base is not None and secure:
        mean, bytes_up = secure_mean(secure, round_index, config.seed)
        method.set_global(apply_delta(base, _server_step(mean, config.server_lr)))
    elif base is not None:
        mean = aggregate(updates, rule=config.aggregation_rule)
        method.set_global(apply_delta(base, _server_step(mean, config.server_lr)))
    per_site = evaluate(method, federation)
    privacy = method.privacy
    return RoundRecord(
        round_index,
        per_site,
        _mean(per_site, "val"),
        _mean(per_site, "test"),
        bytes_up=bytes_up,
        bytes_down_per_client=bytes_down,
        train_seconds=train_seconds,
        seconds=time.perf_counter() - started,
        dp_epsilon_round=privacy.epsilon_per_round if privacy else None,
        dp_epsilon=privacy.epsilon() if privacy else None,
    )


def _run_once(
    federation: Federation, name: str, config: SimulationConfig, on_round: RoundCallback | None
) -> MethodResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    method = build_method(name, federation, config)
    if method.trains:
        records = []
        for round_index in range(1, config.rounds + 1):
            records.append(run_round(method, federation, round_index))
            if on_round:
                on_round(name, records[-1])
    else:
        per_site = evaluate(method, federation)
        records = [RoundRecord(0, per_site, _mean(per_site, "val"), _mean(per_site, "test"))]
    return MethodResult(
        name, method.options(), method.learning_rate(), records, time.perf_counter() - started
    )


def run_method(
    federation: Federation,
    name: SimulationMethod | str,
    config: SimulationConfig,
    on_round: RoundCallback | None = None,
) -> MethodResult:
    """Run ``name``; with several ``lr_factors`` keep the run best on validation."""
    name = parse_choice(SimulationMethod, name, "method")
    if len(config.lr_factors) == 1 or not METHOD_CLASSES[name].trains:
        return _run_once(federation, name, _scaled(config, config.lr_factors[0]), on_round)
    runs = [
        _run_once(federation, name, _scaled(config, factor), on_round)
        for factor in config.lr_factors
    ]
    chosen = max(runs, key=lambda r: r.best.val[SELECTION_METRIC])
    chosen.lr_search = {f"{r.lr:g}": r.best.val[SELECTION_METRIC] for r in runs}
    chosen.seconds = sum(r.seconds for r in runs)
    return chosen


def _scaled(config: SimulationConfig, factor: float) -> SimulationConfig:
    return dataclasses.replace(
        config, lr=config.lr * factor, fedavg_lr=config.fedavg_lr * factor, lr_factors=(factor,)
    )


def majority_baseline(federation: Federation) -> dict:
    """Each site predicts the most frequent class of its TRAIN split; metrics on test.

    With label skew this is far above 1/C, and it is the bar a learning method must clear.
    """
    per_site = {}
    for site in federation.sites:
        majority = int(torch.bincount(site.train.labels, minlength=federation.n_classes).argmax())
        probabilities = torch.zeros(len(site.test), federation.n_classes)
        probabilities[:, majority] = 1.0
        per_site[site.name] = classification_metrics(
            probabilities.numpy(), site.test.labels.numpy(), federation.n_classes
        )
    return {"sites": per_site, "test": mean_over_sites(per_site)}


def describe_federation(federation: Federation) -> dict:
    """Sizes and class counts per site and split, backbone and embedding cost."""
    backbone = federation.backbone
    return {
        "class_names": list(federation.class_names),
        "backbone": backbone.id,
        "random_weights": backbone.is_random,
        "embedding_dim": federation.dim,
        "embed_seconds": federation.embed_seconds,
        "images_encoded": federation.images_encoded,
        "sites": {
            site.name: {
                split: torch.bincount(
                    site.split(split).labels, minlength=federation.n_classes
                ).tolist()
                for split in ("train", "val", "test")
            }
            for site in federation.sites
        },
    }


def run_simulation(
    federation: Federation,
    methods: Sequence[str],
    config: SimulationConfig,
    on_round: RoundCallback | None = None,
) -> SimulationResult:
    """Run every method in ``methods`` on the same federation and embeddings."""
    return SimulationResult(
        config=config,
        federation=describe_federation(federation),
        majority=majority_baseline(federation),
        methods={name: run_method(federation, name, config, on_round) for name in methods},
    )
