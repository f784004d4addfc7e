"""Loading a federation folder: sites, the global class index, splits, the shared cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from fedmedclip.backbone import Backbone, load_backbone
from fedmedclip.data.datasets import DatasetError
from fedmedclip.data.synth import synthesize_federation
from fedmedclip.simulator.federation import SPLITS, federation_classes, load_federation, read_sites


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return load_backbone("ViT-S-32", "none")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the module: each image is encoded once across tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed") / "data"
    synthesize_federation(root, hospitals=2, classes=3, per_hospital=24, seed=3, image_size=32)
    return root


def test_sites_splits_and_global_labels(
    synth_root: Path, backbone: Backbone, cache_dir: Path
) -> None:
    federation = load_federation(synth_root, backbone, cache_dir=cache_dir)
    assert [s.name for s in federation.sites] == ["hospital_0", "hospital_1"]
    assert federation.class_names == ("nevus", "melanoma", "keratosis")  # classes.json order
    assert federation.text_prototypes.shape == (3, backbone.dim)
    for site in federation.sites:
        folder = synth_root / site.name
        all_paths = sorted(p for p in folder.rglob("*.png"))
        split_paths = [p for split in SPLITS for p in site.split(split).paths]
        assert sorted(split_paths) == all_paths  # every image in exactly one split
        assert len(set(split_paths)) == len(split_paths)
        for split in SPLITS:
            data = site.split(split)
            assert len(data) > 0
            assert data.features.shape == (len(data), backbone.dim)
            expected = [federation.class_names.index(p.parent.name) for p in data.paths]
            assert data.labels.tolist() == expected


def test_second_load_reads_the_cache(synth_root: Path, backbone: Backbone, cache_dir: Path) -> None:
    first = load_federation(synth_root, backbone, cache_dir=cache_dir)
    encoded_before = backbone.encoded_images
    second = load_federation(synth_root, backbone, cache_dir=cache_dir)
    assert second.images_encoded == 0
    assert backbone.encoded_images == encoded_before  # the encoder never ran again
    assert torch.equal(first.sites[1].test.features, second.sites[1].test.features)


def test_split_seed_changes_the_split(
    synth_root: Path, backbone: Backbone, cache_dir: Path
) -> None:
    a = load_federation(synth_root, backbone, cache_dir=cache_dir, split_seed=0)
    b = load_federation(synth_root, backbone, cache_dir=cache_dir, split_seed=1)
    assert a.sites[0].test.paths != b.sites[0].test.paths


def test_class_index_is_the_union_without_classes_json(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "fed"
    shutil.copytree(synth_root / "hospital_0" / "nevus", root / "a" / "nevus")
    shutil.copytree(synth_root / "hospital_1" / "melanoma", root / "b" / "zebra")
    sites = read_sites(root)
    assert list(federation_classes(root, sites)) == ["nevus", "zebra"]
    # site "b" lacks "nevus" but its label keeps the global id 1
    assert {r.label for r in sites[1][1]} == {"zebra"}


def test_manifest_site_splits_by_patient(
    synth_root: Path, backbone: Backbone, cache_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "fed"
    shutil.copytree(synth_root / "hospital_0", root / "site")
    images = sorted((root / "site").rglob("*.png"))
    rows = ["path,label,patient_id"] + [
        f"{p.relative_to(root / 'site')},{p.parent.name},patient{i // 3}"
        for i, p in enumerate(images)
    ]
    (root / "site" / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.json").write_text('["nevus", "melanoma", "keratosis"]')
    federation = load_federation(root, backbone, cache_dir=cache_dir)
    patient_of = {p: f"patient{i // 3}" for i, p in enumerate(images)}
    patients = [{patient_of[p] for p in federation.sites[0].split(s).paths} for s in SPLITS]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_bad_federation_folders_fail_clearly(
    synth_root: Path, backbone: Backbone, cache_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_sites(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no hospital sub-folders"):
        read_sites(tmp_path / "empty")
    tiny = tmp_path / "tiny"
    for name in ("nevus", "melanoma"):
        (tiny / "h" / name).mkdir(parents=True)
        shutil.copy(next((synth_root / "hospital_0").rglob("*.png")), tiny / "h" / name / "x.png")
    with pytest.raises(DatasetError, match="hospital 'h' has 2 images, too few"):
        load_federation(tiny, backbone, cache_dir=cache_dir)


def _image_folder(root: Path, counts: dict[str, int]) -> None:
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (16, 16), (20 * i % 255, 60, 90)).save(root / label / f"{i}.png")


def test_a_site_lacking_a_class_keeps_the_global_ids(
    tmp_path: Path, backbone: Backbone, cache_dir: Path
) -> None:
    """Site b has no 'alpha' (id 0): its 'beta' and 'gamma' must stay ids 1 and 2, not 0 and 1."""
    root = tmp_path / "fed"
    _image_folder(root / "a", {"alpha": 4, "beta": 4, "gamma": 4})
    _image_folder(root / "b", {"beta": 6, "gamma": 6})
    (root / "classes.json").write_text('["alpha", "beta", "gamma"]')
    federation = load_federation(root, backbone, cache_dir=cache_dir)
    site_b = federation.sites[1]
    for split in SPLITS:
        data = site_b.split(split)
        expected = [federation.class_names.index(p.parent.name) for p in data.paths]
        assert data.labels.tolist() == expected
    labels_b = torch.cat([site_b.split(s).labels for s in SPLITS])
    assert set(labels_b.tolist()) == {1, 2}
