"""Real site model stores for tests and demos, written by the shared training code.

A synthetic hospital is generated, embedded with the frozen backbone (through the feature
cache), trained for a round with ``train_local``, calibrated, and saved the way a
hospital node does: a global blob ``{"version", "parent_version", "task"}``, a private
head (``HeadMetadata`` with ``global_version`` and ``temperatures``) and ``current.json``
naming both.

With a single site the trained adapter stands in for the aggregate the hub would publish;
the store's format and contents are otherwise what a real federation produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fedmedclip.backbone import Backbone
from fedmedclip.data import ClassIndex, read_image_folder, synthesize_federation
from fedmedclip.feature_cache import FeatureCache
from fedmedclip.heads import pairing_sample
from fedmedclip.model import build_adapter, build_head
from fedmedclip.model_store import HeadMetadata, ModelStore, encode_blob
from fedmedclip.prediction import calibrate
from fedmedclip.schemas import TaskSpec
from fedmedclip.training import TrainConfig, train_local


@dataclass(frozen=True)
class SiteData:
    """One synthetic hospital: its images, their embeddings and labels, and the task."""

    task: TaskSpec
    image_paths: list[Path]
    features: torch.Tensor
    labels: torch.Tensor


def synthetic_site(
    workdir: Path,
    backbone: Backbone,
    *,
    classes: int = 3,
    images: int = 48,
    image_size: int = 64,
    seed: int = 0,
) -> SiteData:
    """Generate and embed one synthetic hospital under ``workdir`` (a new folder)."""
    workdir = Path(workdir)
    summary = synthesize_federation(
        workdir / "images",
        hospitals=1,
        classes=classes,
        per_hospital=images,
        image_size=image_size,
        seed=seed,
    )
    records = read_image_folder(summary.hospital_dirs[0])
    index = ClassIndex(summary.class_names)
    paths = [record.path for record in records]
    features = FeatureCache(workdir / "feature_cache").encode_files(backbone, paths)
    labels = torch.tensor([index.index(record.label) for record in records])
    task = TaskSpec(class_names=summary.class_names, backbone=backbone.name)
    return SiteData(task=task, image_paths=paths, features=features, labels=labels)


def publish_round(
    store: ModelStore,
    backbone: Backbone,
    site: SiteData,
    *,
    global_version: int,
    epochs: int = 2,
    seed: int = 0,
    pairing: bool = False,
) -> int:
    """Train a round from the store's current global version (or version 0) and write
    global ``global_version``, a new head and ``current.json``; return the head version.

    The head carries its training class counts; with ``pairing`` also the training-feature
    sample a node stores (re-pairing, drift monitoring)."""
    config = site.task.adapter_config()
    adapter = build_adapter(config, seed=site.task.fam.seed)
    current = store.current()
    parent = current.global_version if current is not None else None
    if parent is not None:
        adapter.load_state_dict(store.load_global(parent).tensors)
    head = build_head(config, seed=seed)
    text = backbone.text_prototypes(site.task.class_names, site.task.prompt_template)
    result = train_local(
        adapter,
        head,
        site.features,
        site.labels,
        text,
        TrainConfig(epochs=epochs, batch_size=16, seed=seed),
    )
    temperatures = calibrate(adapter, head, site.features, site.labels, text)
    meta = {"version": global_version, "parent_version": parent, "task": site.task.model_dump()}
    store.save_global_blob(global_version, encode_blob(result.adapter_state, meta))
    assert result.head_state is not None
    counts = torch.bincount(site.labels, minlength=len(site.task.class_names)).tolist()
    head_version = store.save_head(
        result.head_state,
        HeadMetadata(global_version=global_version, temperatures=temperatures, class_counts=counts),
        pairing_features=pairing_sample(site.features) if pairing else None,
    )
    store.set_current(global_version, head_version)
    return head_version


def build_model_store(
    root: Path, backbone: Backbone, site: SiteData, *, global_version: int = 1
) -> ModelStore:
    """A store at ``root`` holding one trained round (global ``global_version``, head 1)."""
    store = ModelStore(root)
    publish_round(store, backbone, site, global_version=global_version)
    return store
