"""Synthetic federations: layout, determinism, label skew, domain shift, learnability."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fedmedclip.data.datasets import ClassIndex, read_image_folder
from fedmedclip.data.images import load_image_file
from fedmedclip.data.synth import SynthSummary, synth_class_names, synthesize_federation


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _class_mix(summary: SynthSummary) -> np.ndarray:
    counts = np.array([list(c.values()) for c in summary.per_hospital.values()], dtype=float)
    return counts / counts.sum(axis=1, keepdims=True)


def test_writes_one_image_folder_per_hospital_and_the_class_list(tmp_path: Path) -> None:
    summary = synthesize_federation(
        tmp_path / "fed", hospitals=3, classes=5, per_hospital=40, image_size=48
    )
    root = tmp_path / "fed"
    names = ["nevus", "melanoma", "keratosis", "carcinoma", "dermatofibroma"]
    assert json.loads((root / "classes.json").read_text()) == names
    assert ClassIndex.load(root / "classes.json").names == tuple(names)
    assert summary.class_names == names
    assert sorted(p.name for p in root.iterdir()) == [
        "classes.json",
        "hospital_0",
        "hospital_1",
        "hospital_2",
    ]
    assert summary.hospital_dirs == [root / f"hospital_{i}" for i in range(3)]
    assert summary.total == 120
    for hospital_dir in summary.hospital_dirs:
        records = read_image_folder(hospital_dir)
        written = {name: sum(r.label == name for r in records) for name in names}
        assert written == summary.per_hospital[hospital_dir.name]
        assert len(records) == 40
        # At least two classes with a few images each, whatever the skew.
        assert sorted(written.values())[-2] >= 2
        image = load_image_file(records[0].path)
        assert image.mode == "RGB" and image.size == (48, 48)


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    options = {"hospitals": 2, "per_hospital": 12, "image_size": 32}
    synthesize_federation(tmp_path / "a", seed=5, **options)
    synthesize_federation(tmp_path / "b", seed=5, **options)
    synthesize_federation(tmp_path / "c", seed=6, **options)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")


def test_adding_hospitals_leaves_existing_ones_unchanged(tmp_path: Path) -> None:
    synthesize_federation(tmp_path / "two", hospitals=2, per_hospital=8, image_size=32)
    synthesize_federation(tmp_path / "three", hospitals=3, per_hospital=8, image_size=32)
    for hospital in ("hospital_0", "hospital_1"):
        assert _tree(tmp_path / "two" / hospital) == _tree(tmp_path / "three" / hospital)


def test_small_alpha_skews_the_class_mix_and_may_drop_classes(tmp_path: Path) -> None:
    options = {"hospitals": 6, "classes": 4, "per_hospital": 40, "image_size": 32}
    skewed = synthesize_federation(tmp_path / "skewed", alpha=0.1, **options)
    even = synthesize_federation(tmp_path / "even", alpha=1000.0, **options)
    # Mean distance of a hospital's class mix from uniform.
    distance = {
        name: float(np.abs(_class_mix(s) - 0.25).sum(axis=1).mean() / 2)
        for name, s in (("skewed", skewed), ("even", even))
    }
    assert distance["skewed"] > 0.4 > 0.1 > distance["even"]
    assert any(0 in counts.values() for counts in skewed.per_hospital.values())


def test_even_extreme_skew_leaves_every_hospital_two_classes(tmp_path: Path) -> None:
    summary = synthesize_federation(
        tmp_path / "fed", hospitals=6, per_hospital=60, alpha=0.01, image_size=32
    )
    for counts in summary.per_hospital.values():
        assert sum(counts.values()) == 60
        assert sorted(counts.values())[-2] >= 3  # max(2, per_hospital // 20)


def test_each_hospital_has_its_own_camera(tmp_path: Path) -> None:
    summary = synthesize_federation(
        tmp_path / "fed", hospitals=4, per_hospital=40, image_size=32, alpha=1000.0
    )
    means = []
    for hospital_dir in summary.hospital_dirs:
        pixels = [np.asarray(load_image_file(r.path)) for r in read_image_folder(hospital_dir)]
        means.append(np.mean(pixels, axis=(0, 1, 2)))
    gaps = [np.abs(means[i] - means[j]).max() for i in range(4) for j in range(i + 1, 4)]
    assert min(gaps) > 3.0  # grey levels: a visible colour or brightness shift


def _hospital_means(summary: SynthSummary) -> list[np.ndarray]:
    return [
        np.mean([np.asarray(load_image_file(r.path)) for r in read_image_folder(d)], axis=(0, 1, 2))
        for d in summary.hospital_dirs
    ]


def test_domain_shift_scales_the_cameras_and_zero_removes_them(tmp_path: Path) -> None:
    """The demo's milder shift: hospitals' colour casts shrink with ``domain_shift``."""
    options = {"hospitals": 4, "per_hospital": 40, "image_size": 32, "alpha": 1000.0}

    def widest_gap(shift: float) -> float:
        means = _hospital_means(
            synthesize_federation(tmp_path / str(shift), domain_shift=shift, **options)
        )
        return max(np.abs(means[i] - means[j]).max() for i in range(4) for j in range(i + 1, 4))

    full, third, none = widest_gap(1.0), widest_gap(0.3), widest_gap(0.0)
    assert none < third < full
    assert third < 0.6 * full


def test_default_strengths_are_the_unscaled_generator(tmp_path: Path) -> None:
    """bench/ and the tests rely on the defaults: explicit 1.0 must change nothing."""
    options = {"hospitals": 2, "per_hospital": 12, "image_size": 32, "seed": 2}
    synthesize_federation(tmp_path / "a", **options)
    synthesize_federation(tmp_path / "b", domain_shift=1.0, class_cue=1.0, **options)
    synthesize_federation(tmp_path / "c", class_cue=3.0, **options)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")


def _features(image_pixels: np.ndarray) -> np.ndarray:
    """Translation-invariant features: low-frequency spectrum and colour statistics."""
    pixels = image_pixels.astype(np.float32) / 255
    gray = pixels.mean(axis=-1)
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(gray - gray.mean())))
    centre = gray.shape[0] // 2
    low = spectrum[centre - 8 : centre + 8, centre - 8 : centre + 8].ravel()
    flat = pixels.reshape(-1, 3)
    colour = np.concatenate([flat.std(0), np.percentile(flat, [5, 25, 50], axis=0).ravel()])
    return np.concatenate([np.log1p(low), colour])


@pytest.mark.slow
def test_classes_are_learnable_from_pixels_by_a_small_model(tmp_path: Path) -> None:
    summary = synthesize_federation(
        tmp_path / "fed", hospitals=1, classes=4, per_hospital=240, alpha=1000.0, seed=3
    )
    index = ClassIndex(summary.class_names)
    records = read_image_folder(summary.hospital_dirs[0])
    x = np.stack([_features(np.asarray(load_image_file(r.path))) for r in records])
    y = np.array([index.index(r.label) for r in records])
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:160], order[160:]
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    x = np.hstack([x, np.ones((len(x), 1))])
    targets = np.eye(len(index))[y]
    weights = np.linalg.solve(
        x[train].T @ x[train] + np.eye(x.shape[1]), x[train].T @ targets[train]
    )
    accuracy = float((np.argmax(x[test] @ weights, axis=1) == y[test]).mean())
    assert accuracy > 0.6  # chance is about 0.25


@pytest.mark.slow
def test_two_hundred_images_take_well_under_five_seconds(tmp_path: Path) -> None:
    calls: list[int] = []
    # CPU time of this process, so that other jobs on a busy machine do not count.
    start = time.process_time()
    synthesize_federation(tmp_path / "fed", hospitals=1, per_hospital=200, progress=calls.append)
    assert time.process_time() - start < 5.0
    assert calls == list(range(1, 201))


def test_class_names_extend_beyond_the_named_lesions() -> None:
    names = synth_class_names(10)
    assert names[:4] == ["nevus", "melanoma", "keratosis", "carcinoma"]
    assert names[8:] == ["lesion_8", "lesion_9"]
    assert len(set(names)) == 10


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize_federation(tmp_path, per_hospital=4)
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "options",
    [
        {"hospitals": 0},
        {"classes": 1},
        {"classes": 31},
        {"per_hospital": 3},
        {"alpha": 0.0},
        {"domain_shift": -0.5},
        {"class_cue": 0.0},
    ],
)
def test_invalid_arguments_are_refused(tmp_path: Path, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        synthesize_federation(tmp_path / "fed", **options)


def test_the_rare_class_scenario_makes_each_class_rare_at_some_hospitals(tmp_path: Path) -> None:
    summary = synthesize_federation(
        tmp_path / "fed", hospitals=4, classes=4, per_hospital=40, rare=(2, 3), image_size=32
    )
    counts = [list(c.values()) for c in summary.per_hospital.values()]
    assert counts == [[3, 3, 17, 17], [17, 3, 3, 17], [17, 17, 3, 3], [3, 17, 17, 3]]
    with pytest.raises(ValueError, match="rare classes"):
        synthesize_federation(tmp_path / "bad", classes=4, rare=(4, 1), image_size=32)
    with pytest.raises(ValueError, match="too few"):
        synthesize_federation(tmp_path / "bad2", classes=4, per_hospital=10, rare=(2, 4))
