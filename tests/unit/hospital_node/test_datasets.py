"""Datasets are confined to the data roots, through ``..``, symlinks and manifests alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from services.hospital_node.datasets import (
    DatasetRejected,
    DatasetSource,
    confine,
    inspect_dataset,
    load_site_records,
)

CLASSES = ["nevus", "melanoma"]


def _image(path: Path, shade: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 50, 50)).save(path)
    return path


def _folder(root: Path, per_class: int = 2) -> Path:
    for label in CLASSES:
        for i in range(per_class):
            _image(root / label / f"{i}.png", 40 * i)
    return root


def test_confine_accepts_paths_inside_a_root_absolute_or_relative(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = _folder(root / "site")
    assert confine(str(data), [root]) == data.resolve()
    assert confine("site", [tmp_path / "other", root]) == data.resolve()
    assert confine(str(root / "site" / ".." / "site"), [root]) == data.resolve()


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_confine_refuses_paths_that_resolve_outside(tmp_path: Path, how: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = _folder(tmp_path / "outside")
    path = {
        "absolute": str(outside),
        "dotdot": str(root / ".." / "outside"),
        "symlink": str(root / "link"),
    }[how]
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetRejected, match="outside the data roots"):
        confine(path, [root])


def test_confine_without_roots_or_target_says_why(tmp_path: Path) -> None:
    with pytest.raises(DatasetRejected, match="No data roots are configured"):
        confine(str(tmp_path), [])
    with pytest.raises(DatasetRejected, match="does not exist"):
        confine(str(tmp_path / "missing"), [tmp_path])


def test_manifest_rows_pointing_outside_the_roots_are_problems(tmp_path: Path) -> None:
    root = tmp_path / "root"
    inside = [_image(root / "img" / f"{i}.png") for i in range(4)]
    outside = _image(tmp_path / "secret.png")
    manifest = root / "site.csv"
    rows = [f"img/{p.name},{CLASSES[i % 2]},p{i}" for i, p in enumerate(inside)]
    manifest.write_text("path,label,patient_id\n" + "\n".join(rows) + "\n../secret.png,nevus,p9\n")
    with pytest.raises(DatasetRejected) as info:
        inspect_dataset(confine(str(manifest), [root]), [root], CLASSES)
    assert "1 images lie outside the data roots" in info.value.problems[0]
    assert str(outside.parent) in info.value.problems[0]
    assert info.value.report["n_images"] == 4  # the outside row was never opened


def test_a_good_dataset_gives_a_report(tmp_path: Path) -> None:
    data = _folder(tmp_path / "site", per_class=3)
    records, report = inspect_dataset(data, [tmp_path], CLASSES)
    assert len(records) == 6
    assert report["per_class"] == {"nevus": 3, "melanoma": 3} and report["problems"] == []


def test_site_records_qualify_patient_ids_by_dataset(tmp_path: Path) -> None:
    sources = []
    for n in (1, 2):
        folder = tmp_path / f"site{n}"
        for i in range(4):
            _image(folder / "img" / f"{i}.png")
        (folder / "m.csv").write_text(
            "path,label,patient_id\n"
            + "".join(f"img/{i}.png,{CLASSES[i % 2]},p1\n" for i in range(4))
        )
        sources.append(DatasetSource(n, f"site{n}", folder / "m.csv"))
    records = load_site_records(sources, [tmp_path], CLASSES)
    assert {r.patient_id for r in records} == {"1:p1", "2:p1"}
    with pytest.raises(DatasetRejected, match="No dataset is registered"):
        load_site_records([], [tmp_path], CLASSES)


def test_confine_refuses_a_path_with_a_nul_character(tmp_path: Path) -> None:
    with pytest.raises(DatasetRejected, match="NUL character"):
        confine("a\x00b", [tmp_path])
