"""Patient-level, label-stratified train / validation / test splits."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from fedmedclip.data.datasets import ImageRecord, read_manifest
from fedmedclip.data.splits import split_indices, split_records


def _check_partition(n: int, splits: tuple[list[int], list[int], list[int]]) -> None:
    assert sorted(i for split in splits for i in split) == list(range(n))


def test_manifest_patients_never_span_two_splits(tmp_path: Path) -> None:
    rng = random.Random(1)
    lines = ["path,label,patient_id"]
    for patient in range(60):
        label = rng.choice(["nevus", "melanoma", "keratosis"])
        for visit in range(rng.randint(1, 6)):
            lines.append(f"p{patient}_{visit}.png,{label},P{patient}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    records = read_manifest(manifest)

    splits = split_records(records, seed=3)

    patients = [{r.patient_id for r in split} for split in (splits.train, splits.val, splits.test)]
    assert not patients[0] & patients[1]
    assert not patients[0] & patients[2]
    assert not patients[1] & patients[2]
    assert sorted(map(str, splits.train + splits.val + splits.test)) == sorted(map(str, records))
    assert all(split for split in (splits.train, splits.val, splits.test))


def test_without_groups_every_label_is_split_in_proportion() -> None:
    labels = [0] * 100 + [1] * 40 + [2] * 20
    train, val, test = split_indices(labels, None, val_fraction=0.15, test_fraction=0.2)
    _check_partition(len(labels), (train, val, test))
    for split, fraction in ((train, 0.65), (val, 0.15), (test, 0.2)):
        counts = Counter(labels[i] for i in split)
        for label, total in ((0, 100), (1, 40), (2, 20)):
            assert abs(counts[label] - fraction * total) <= 1


def test_split_is_deterministic_for_a_seed() -> None:
    labels = [i % 3 for i in range(90)]
    groups = [f"P{i // 2}" if i % 5 else None for i in range(90)]
    first = split_indices(labels, groups, seed=7)
    assert split_indices(labels, groups, seed=7) == first
    assert split_indices(labels, groups, seed=8) != first


@pytest.mark.parametrize("seed", range(10))
def test_a_large_patient_does_not_unbalance_the_split(seed: int) -> None:
    # One patient with 30 images among 70 single-image patients: placed late, the big
    # group would overshoot whichever split it lands in.
    groups = ["big"] * 30 + [f"P{i}" for i in range(70)]
    train, val, test = split_indices([0] * 100, groups, seed=seed)
    assert set(range(30)) <= set(train)
    assert (len(train), len(val), len(test)) == (65, 15, 20)


def test_samples_without_patient_id_are_split_individually() -> None:
    labels = [0] * 20
    groups: list[str | None] = ["P1"] * 10 + [None] * 10
    train, val, test = split_indices(labels, groups, val_fraction=0.25, test_fraction=0.25)
    _check_partition(20, (train, val, test))
    first_patient = set(range(10))
    assert first_patient <= set(train) or first_patient <= set(val) or first_patient <= set(test)
    # The ten singletons fill the other splits instead of all landing together.
    assert sum(1 for split in (train, val, test) if split) == 3


def test_tiny_classes_are_trained_on_first() -> None:
    train, val, test = split_indices([0] * 30 + [1], None)
    assert 30 in train


def test_a_zero_fraction_leaves_that_split_empty() -> None:
    train, val, test = split_indices([0, 1] * 10, None, val_fraction=0.0, test_fraction=0.3)
    assert val == []
    assert len(test) == 6 and len(train) == 14


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_invalid_fractions_are_refused(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        split_indices([0, 1, 0, 1], None, val_fraction=val, test_fraction=test)


def test_group_list_must_match_the_labels() -> None:
    with pytest.raises(ValueError, match="3 group ids for 2 labels"):
        split_indices([0, 1], ["a", "b", "c"])


def test_split_records_keeps_input_order_within_a_split() -> None:
    records = [ImageRecord(Path(f"{i}.png"), "ab"[i % 2]) for i in range(40)]
    splits = split_records(records, seed=0)
    for split in (splits.train, splits.val, splits.test):
        assert split == sorted(split, key=records.index)
