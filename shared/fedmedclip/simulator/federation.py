"""Load a federation folder for the simulator: one dataset per hospital, embedded once.

Layout: ``ROOT/<hospital>/`` is one site, either an ImageFolder (``<class>/<image>``) or a
folder holding ``manifest.csv`` (``path,label[,patient_id]``, which allows patient-level
splits). ``ROOT/classes.json`` fixes the federation's class order; without it the class
index is the sorted union of every site's labels. Every site uses that one global index,
so a site lacking a class does not shift the others' label ids.

Every image goes through the frozen image encoder once, via the on-disk
:class:`~fedmedclip.feature_cache.FeatureCache`; every method then reads the same
embeddings, so comparing methods costs no extra encoder passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedmedclip import training_defaults as defaults
from fedmedclip.backbone import Backbone
from fedmedclip.data.datasets import ClassIndex, DatasetError, ImageRecord, read_dataset
from fedmedclip.data.splits import split_records
from fedmedclip.feature_cache import FeatureCache
from fedmedclip.site_round import SiteFeatures

CLASSES_FILE = "classes.json"
MANIFEST_FILE = "manifest.csv"
SPLITS = ("train", "val", "test")


@dataclass
class SplitData:
    """One split of one site: image paths, their frozen embeddings and global label ids."""

    paths: list[Path]
    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Site:
    """A hospital: its train, validation and test splits."""

    name: str
    train: SplitData
    val: SplitData
    test: SplitData

    def split(self, name: str) -> SplitData:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
        return getattr(self, name)

    def features(self) -> SiteFeatures:
        """The site's embeddings and labels, split by split, as a site round takes them."""
        return SiteFeatures(
            self.train.features,
            self.train.labels,
            self.val.features,
            self.val.labels,
            self.test.features,
            self.test.labels,
        )


@dataclass
class Federation:
    """Everything the methods share: sites, class names, text prototypes, the backbone."""

    class_names: tuple[str, ...]
    sites: list[Site]
    text_prototypes: torch.Tensor
    backbone: Backbone
    embed_seconds: float
    images_encoded: int

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        return int(self.text_prototypes.shape[1])


def read_sites(root: Path) -> list[tuple[str, list[ImageRecord]]]:
    """``(site name, records)`` for every non-hidden sub-folder of ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"federation folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root} has no hospital sub-folders (expected ROOT/<hospital>/...)")
    sites = []
    for folder in folders:
        manifest = folder / MANIFEST_FILE
        records = read_dataset(manifest if manifest.is_file() else folder)
        if not records:
            raise DatasetError(f"hospital folder {folder} holds no images")
        sites.append((folder.name, records))
    return sites


def federation_classes(root: Path, sites: list[tuple[str, list[ImageRecord]]]) -> ClassIndex:
    """The global class index: ``classes.json`` when present, else the sorted label union."""
    classes_file = Path(root) / CLASSES_FILE
    if classes_file.is_file():
        return ClassIndex.load(classes_file)
    return ClassIndex(sorted({r.label for _, records in sites for r in records}))


def load_federation(
    root: Path,
    backbone: Backbone,
    *,
    cache_dir: Path,
    prompt_template: str = defaults.PROMPT_TEMPLATE,
    val_fraction: float = defaults.VAL_FRACTION,
    test_fraction: float = defaults.TEST_FRACTION,
    split_seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Federation:
    """Read, split and embed a federation folder.

    Splits are per site and by patient where ids exist (see ``split_records``). All images
    of all sites are embedded in one cached pass; ``progress(done, total)`` follows it.
    """
    raw_sites = read_sites(root)
    index = federation_classes(root, raw_sites)
    split_sites = []
    for name, records in raw_sites:
        splits = split_records(
            records, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed
        )
        parts = [getattr(splits, s) for s in SPLITS]
        empty = [s for s, part in zip(SPLITS, parts, strict=True) if not part]
        if empty:
            raise DatasetError(
                f"hospital {name!r} has {len(records)} images, too few for a "
                f"{'/'.join(empty)} split; give it more images or change the split fractions"
            )
        split_sites.append((name, parts))
    ordered = [r for _, parts in split_sites for part in parts for r in part]
    labels = torch.tensor([index.index(r.label) for r in ordered], dtype=torch.long)
    cache = FeatureCache(cache_dir)
    started = time.perf_counter()
    features = cache.encode_files(backbone, [r.path for r in ordered], progress=progress)
    embed_seconds = time.perf_counter() - started

    sites = []
    offset = 0
    for name, parts in split_sites:
        data = []
        for part in parts:
            end = offset + len(part)
            data.append(SplitData([r.path for r in part], features[offset:end], labels[offset:end]))
            offset = end
        sites.append(Site(name, *data))
    return Federation(
        class_names=index.names,
        sites=sites,
        text_prototypes=backbone.text_prototypes(index.names, prompt_template),
        backbone=backbone,
        embed_seconds=embed_seconds,
        images_encoded=cache.misses,
    )
