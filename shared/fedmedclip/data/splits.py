"""Train / validation / test splits that never leak a patient across splits.

Images of one patient are strongly correlated; if they landed in both train and test,
test accuracy would measure memorisation. So the unit of assignment is the patient
(a group), and samples without a patient id are their own group. Within that constraint
the split is stratified: groups are binned by their majority label and each bin is
dealt out so that every split gets close to its share of that label's images.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fedmedclip import training_defaults as defaults

from .datasets import ImageRecord

T = TypeVar("T")

_SPLIT_COUNT = 3  # train, val, test, in that order everywhere below


@dataclass
class Splits(Generic[T]):
    train: list[T]
    val: list[T]
    test: list[T]


def split_indices(
    labels: Sequence[int],
    groups: Sequence[str | None] | None = None,
    *,
    val_fraction: float = defaults.VAL_FRACTION,
    test_fraction: float = defaults.TEST_FRACTION,
    seed: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """Split ``range(len(labels))`` into sorted (train, val, test) index lists.

    ``groups[i]`` is sample i's patient id (None: a patient of its own); all samples of a
    group go to the same split. Deterministic for a given seed. A split whose fraction
    is 0 stays empty. Each label's first (largest) group goes to the split with the
    largest share, train with the default fractions, so a rare label is still learnt;
    with very few samples it may then be absent from val or test.
    """
    if groups is not None and len(groups) != len(labels):
        raise ValueError(f"{len(groups)} group ids for {len(labels)} labels")
    fractions = _fractions(val_fraction, test_fraction)
    rng = random.Random(seed)
    buckets: tuple[list[int], ...] = tuple([] for _ in range(_SPLIT_COUNT))
    for stratum in _strata(labels, groups):
        rng.shuffle(stratum)
        # Largest groups first, so the small ones can even out the shares at the end;
        # the shuffle above decides the order among groups of equal size.
        stratum.sort(key=len, reverse=True)
        total = sum(len(group) for group in stratum)
        deficits = [fraction * total for fraction in fractions]
        for group in stratum:
            # The deficits sum to the images still to place (> 0), so the largest is
            # positive and a split with fraction 0 (deficit 0) is never chosen.
            target = max(range(_SPLIT_COUNT), key=deficits.__getitem__)  # ties: train first
            buckets[target].extend(group)
            deficits[target] -= len(group)
    train, val, test = (sorted(bucket) for bucket in buckets)
    return train, val, test


def split_records(
    records: Sequence[ImageRecord],
    *,
    val_fraction: float = defaults.VAL_FRACTION,
    test_fraction: float = defaults.TEST_FRACTION,
    seed: int = 0,
) -> Splits[ImageRecord]:
    """Split records by patient (where ids exist) and by label; see :func:`split_indices`.

    Records keep their input order within each split.
    """
    label_ids = {label: i for i, label in enumerate(sorted({r.label for r in records}))}
    train, val, test = split_indices(
        [label_ids[r.label] for r in records],
        [r.patient_id for r in records],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return Splits(
        train=[records[i] for i in train],
        val=[records[i] for i in val],
        test=[records[i] for i in test],
    )


def _fractions(val_fraction: float, test_fraction: float) -> tuple[float, float, float]:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1)")
    train_fraction = 1.0 - val_fraction - test_fraction
    if train_fraction <= 0:
        raise ValueError("val_fraction + test_fraction must leave a share for training")
    return train_fraction, val_fraction, test_fraction


def _strata(labels: Sequence[int], groups: Sequence[str | None] | None) -> list[list[list[int]]]:
    """Group sample indices by patient, then bin the groups by majority label.

    Returns the bins in label order, each a list of groups in first-appearance order,
    so the result depends only on the input, never on hash order.
    """
    members: dict[Hashable, list[int]] = {}
    for i in range(len(labels)):
        group_id = groups[i] if groups is not None else None
        key: Hashable = ("patient", group_id) if group_id is not None else ("sample", i)
        members.setdefault(key, []).append(i)
    bins: dict[int, list[list[int]]] = {}
    for indices in members.values():
        counts = Counter(labels[i] for i in indices)
        majority = min(counts, key=lambda label: (-counts[label], label))
        bins.setdefault(majority, []).append(indices)
    return [bins[label] for label in sorted(bins)]
