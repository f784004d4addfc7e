"""One round of local work: base FAM in, FAM delta out, private head kept on site.

The steps follow the federation contract: read the task and the round from the hub,
download the round's base model and check its sha256, embed the site's images once
(feature cache), run the site's round from there (:func:`fedmedclip.site_round.run_site_round`,
the one the simulator runs: train the shared adapter and the private heads, calibrate on
the validation split if the round asks, evaluate on the test split), send only the
encoded FAM delta (clipped and noised first when the site uses differential privacy, see
``privacy``; a secure round gets it masked through the secure-aggregation protocol
instead, see ``secure_upload``), then version the head in the model store next to the FAM
version it was trained from, with a sample of training features that lets the inference
API re-pair it with later versions.

Nothing here touches the node database: progress goes through a :class:`Progress`
object, so the same code runs in a Celery worker and in the API's embedded thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fedmedclip.aggregation import clip_update
from fedmedclip.backbone import Backbone, cached_backbone, resolve_device
from fedmedclip.class_statistics import drop_statistics
from fedmedclip.codec import encode_update, payload_sha256, state_delta
from fedmedclip.data.datasets import ClassIndex, ImageRecord
from fedmedclip.data.splits import split_records
from fedmedclip.feature_cache import FeatureCache
from fedmedclip.heads import LocalHead, new_local_head, pack_heads, pairing_sample, unpack_heads
from fedmedclip.model import PrivateHead, build_head, expected_shapes
from fedmedclip.model_store import HeadMetadata, ModelStore, StoredModel
from fedmedclip.privacy import DPConfig, noise_share, privatize_delta
from fedmedclip.schemas import RoundInfo, RoundState, TaskSpec
from fedmedclip.secagg.vectors import flatten_delta
from fedmedclip.site_round import SiteFeatures, run_site_round, train_config
from services.common.hub_client import HubClient, HubError, HubRejected, ensure_global
from services.hospital_node.datasets import DatasetSource, load_site_records
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.privacy import PrivacyLedger
from services.hospital_node.secure_upload import SecureRoundError, SecureUpload
from services.hospital_node.settings import NodeSettings

log = logging.getLogger(__name__)

SPLIT_SEED = 0
"""One split of a site's records for every round: the private head carries over between
rounds, so a split drawn anew each round would test it on images it trained on before."""

# Share of the job's overall percent that each phase covers (start, end).
EMBED_SPAN = (5.0, 35.0)
TRAIN_SPAN = (35.0, 90.0)


class JobFailure(RuntimeError):
    """The job cannot go on; the message becomes the job's ``error``."""


class Progress(Protocol):
    """Where a job reports what it is doing (the node database, in practice)."""

    def phase(self, name: str, percent: float) -> None: ...

    def epoch(self, epoch: int, epochs: int, loss: float, percent: float) -> None: ...

    def uploading(self) -> None: ...


@dataclass(frozen=True)
class JobOutcome:
    """What a successful job records."""

    base_version: int
    head_version: int
    sample_count: int
    update_bytes: int
    update_sha256: str
    metrics: dict[str, float]


def _span(span: tuple[float, float], fraction: float) -> float:
    return span[0] + (span[1] - span[0]) * fraction


def _open_round(hub: HubClient, round_id: int) -> RoundInfo:
    round_info = hub.get_round(round_id)
    if round_info.state != RoundState.open:
        raise JobFailure(f"round {round_id} is {round_info.state.value}, no longer open")
    return round_info


class RoundWatch:
    """Notices a round that closed while the site trains, so the job stops early.

    Asks the hub at most every ``every`` seconds, with a client that gives up quickly: a
    hub that is briefly away must not stall training (the upload retries anyway).
    """

    def __init__(self, hub: HubClient, round_id: int, every: float) -> None:
        self.hub = hub
        self.round_id = round_id
        self.every = every
        self._last = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        try:
            _open_round(self.hub, self.round_id)
        except HubError as exc:
            log.info("could not check round %d: %s", self.round_id, exc)


def _check_base(task: TaskSpec, base: StoredModel) -> None:
    base_task = base.meta.get("task") or {}
    if base_task.get("class_names") != task.class_names or base_task.get("backbone") != (
        task.backbone
    ):
        raise JobFailure(
            f"global model v{base.version} was made for another task (classes or backbone differ)"
        )


def _check_weights(task: TaskSpec, backbone: Backbone) -> None:
    """Random and real CLIP weights must not be mixed in one federation."""
    task_random = task.weights_id.strip().lower() in ("", "none", "random")
    if task_random != backbone.is_random:
        raise JobFailure(
            f"the task expects CLIP weights {task.weights_id!r} but this node uses "
            f"{backbone.weights.describe()} (FEDMEDCLIP_NODE_BACKBONE_WEIGHTS)"
        )


def _labels(records: Sequence[ImageRecord], index: ClassIndex) -> torch.Tensor:
    return torch.tensor([index.index(r.label) for r in records], dtype=torch.long)


def _previous_heads(
    store: ModelStore, task: TaskSpec, backbone: Backbone
) -> tuple[PrivateHead | None, LocalHead | None]:
    """The site's latest federated and local heads, if trained for this task and backbone
    (a head stored before local heads existed has none)."""
    for version in reversed(store.head_versions()):
        stored = store.load_head(version)
        if stored.meta.class_names == task.class_names and stored.meta.backbone_id == backbone.id:
            return unpack_heads(stored.tensors, task.adapter_config(), task.fam.seed)
    return None, None


def site_features(
    settings: NodeSettings,
    backbone: Backbone,
    task: TaskSpec,
    datasets: Sequence[DatasetSource],
    *,
    progress: Progress,
) -> SiteFeatures:
    """Split the site's records by patient and embed them (feature cache: once per image).

    The split is the same in every round (``SPLIT_SEED``), never a function of the round."""
    index = ClassIndex(task.class_names)
    records = load_site_records(datasets, settings.data_roots, task.class_names)
    splits = split_records(records, seed=SPLIT_SEED)
    if len(splits.train) < 2:
        raise JobFailure(f"only {len(splits.train)} training images; need at least 2")
    progress.phase("embedding images", EMBED_SPAN[0])
    parts = (splits.train, splits.val, splits.test)
    features = FeatureCache(settings.feature_cache_dir).encode_files(
        backbone,
        [r.path for part in parts for r in part],
        progress=lambda done, total: progress.phase(
            "embedding images", _span(EMBED_SPAN, done / total)
        ),
    )
    xs = torch.split(features, [len(part) for part in parts])
    ys = [_labels(part, index) for part in parts]
    return SiteFeatures(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2])


def _upload(
    hub: HubClient,
    round_id: int,
    payload: bytes,
    sample_count: int,
    metrics: dict[str, float],
    idempotency_key: str,
) -> None:
    try:
        hub.upload_update(
            round_id,
            payload,
            sample_count=sample_count,
            metrics=metrics,
            idempotency_key=idempotency_key,
        )
    except HubRejected as exc:
        _open_round(hub, round_id)  # a closed round is the clearer reason, when it is one
        raise JobFailure(str(exc)) from exc


def _secure_step(step: Callable[..., None], *args: object) -> None:
    """Run one protocol step; its refusal becomes the job's error."""
    try:
        step(*args)
    except SecureRoundError as exc:
        raise JobFailure(str(exc)) from exc


def _upload_secure(
    secure: SecureUpload,
    round_info: RoundInfo,
    task: TaskSpec,
    delta: dict[str, torch.Tensor],
    sample_count: int,
    progress: Progress,
) -> tuple[int, str]:
    """Clip (the hub cannot: it never sees this update), mask and upload; answer the
    unmask request. Returns the masked vector's size and sha256.

    Under the round's distributed DP the site adds its noise share (the sum carries the
    central noise) and weighs itself 1, not by its sample count: a weighted mean would
    scale each site's sensitivity by a count the accountant does not know.
    """
    weight = sample_count
    if round_info.clip_norm is not None:  # a bounded influence leaves no room for statistics
        delta = clip_update(drop_statistics(delta), round_info.clip_norm)
    if round_info.dp is not None:
        central = DPConfig(
            round_info.dp.clip_norm, round_info.dp.noise_multiplier, round_info.dp.delta
        )
        delta = privatize_delta(delta, noise_share(central, len(round_info.participants or ())))
        weight = 1
    try:
        values = flatten_delta(delta, expected_shapes(task.adapter_config()))
    except ValueError as exc:
        raise JobFailure(f"the update does not fit the task: {exc}") from exc
    secure.report = lambda phase: progress.phase(f"secure aggregation: {phase}", 95.0)
    _secure_step(secure.upload, values, weight)
    assert secure.masked_sha256 is not None  # set by upload
    return secure.masked_bytes, secure.masked_sha256


def run_training(
    *,
    job_id: int,
    round_id: int,
    idempotency_key: str,
    datasets: Sequence[DatasetSource],
    settings: NodeSettings,
    hub: HubClient,
    progress: Progress,
    ledger: PrivacyLedger,
) -> JobOutcome:
    """Do the site's work for ``round_id`` and upload its FAM delta; see the module doc."""
    store = ModelStore(settings.model_store_dir)
    dp = settings.dp_config()
    if dp is not None:  # fail before any work when the site's budget is spent
        ledger.ensure_budget(dp, settings.dp_max_epsilon)
    progress.phase("reading task and round", 0.0)
    task = hub.get_task()
    round_info = _open_round(hub, round_id)
    secure = None
    if round_info.secure_aggregation:  # keys first: every site must share before training
        secure = SecureUpload(
            hub,
            round_id,
            poll_seconds=settings.poll_seconds,
            report=lambda phase: progress.phase(f"secure aggregation: {phase}", 1.0),
        )
        _secure_step(secure.join)
    progress.phase("downloading base model", 2.0)
    base = ensure_global(hub, store, hub.model_info(round_info.base_version))
    _check_base(task, base)
    progress.phase("loading backbone", 4.0)
    device = resolve_device(settings.device)
    backbone = cached_backbone(task.backbone, settings.backbone_weights, device)
    _check_weights(task, backbone)
    data = site_features(settings, backbone, task, datasets, progress=progress)

    config = task.adapter_config()
    head, local = _previous_heads(store, task, backbone)
    head = head or build_head(config, seed=round_id)
    local = local or new_local_head(config, fam_seed=task.fam.seed, seed=round_id)
    text = backbone.text_prototypes(task.class_names, task.prompt_template)
    progress.phase("training", TRAIN_SPAN[0])

    def after_epoch(epoch: int, epochs: int, loss: float) -> None:
        progress.epoch(epoch, epochs, loss, _span(TRAIN_SPAN, epoch / epochs))
        watch.check()

    with connect_hub(settings, interactive=True) as quick_hub:
        watch = RoundWatch(quick_hub, round_id, settings.poll_seconds)
        site_round = run_site_round(
            base.tensors,
            config,
            head,
            local,
            data,
            text,
            train_config(round_info.hints, device=device),
            calibrate_on_val=round_info.hints.calibrate,
            on_epoch=after_epoch,
            on_phase=lambda name: progress.phase(name, TRAIN_SPAN[1]),
        )
    result, metrics = site_round.training, site_round.metrics

    delta = state_delta(result.adapter_state, base.tensors)
    omit_rows = result.pruned_rows
    if dp is not None:  # the noised delta goes whole: the pruned-row bitmap is not private
        metrics = metrics | ledger.charge(
            job_id=job_id, round_id=round_id, config=dp, max_epsilon=settings.dp_max_epsilon
        )
        delta, omit_rows = privatize_delta(delta, dp), None
    progress.uploading()
    if secure is not None:
        sent = _upload_secure(secure, round_info, task, delta, result.n_samples, progress)
    else:
        payload = encode_update(
            delta,
            base_version=round_info.base_version,
            quantization=task.fam.quantization,
            omit_rows=omit_rows,
        )
        _upload(hub, round_id, payload, result.n_samples, metrics, idempotency_key)
        sent = (len(payload), payload_sha256(payload))
    head_version = store.save_head(
        pack_heads(head, local),
        HeadMetadata(
            global_version=round_info.base_version,
            round_id=round_id,
            temperatures=site_round.temperatures,
            combination=site_round.combination,
            metrics=metrics,
            class_names=task.class_names,
            prompt_template=task.prompt_template,
            backbone=task.backbone,
            weights=settings.backbone_weights,
            backbone_id=backbone.id,
            class_counts=torch.bincount(data.y_train, minlength=len(task.class_names)).tolist(),
        ),
        pairing_features=pairing_sample(data.x_train, seed=round_id),
    )
    store.set_current(global_version=round_info.base_version, head_version=head_version)
    return JobOutcome(
        base_version=round_info.base_version,
        head_version=head_version,
        sample_count=result.n_samples,
        update_bytes=sent[0],
        update_sha256=sent[1],
        metrics=metrics,
    )
