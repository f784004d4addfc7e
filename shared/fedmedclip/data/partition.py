"""Split one pooled dataset into simulated federation sites.

``dirichlet_partition`` is the usual non-IID benchmark protocol: each class's samples are
shared out among the sites in Dirichlet(alpha) proportions, so small alpha gives strong
label skew. ``partition_by_column`` uses a real site column (e.g. the acquiring hospital
in a public dataset's metadata) instead.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized

import numpy as np


def dirichlet_partition(
    labels: Sequence[int],
    n_parts: int,
    alpha: float,
    seed: int,
    min_per_part: int = 2,
) -> list[list[int]]:
    """Partition ``range(len(labels))`` into ``n_parts`` sorted index lists.

    Every index lands in exactly one part. Parts left with fewer than ``min_per_part``
    samples (likely for small alpha) are topped up with random samples from the largest
    part, which keeps the skew but guarantees every site can train and evaluate.
    """
    if n_parts < 1:
        raise ValueError("n_parts must be at least 1")
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    if min_per_part < 0:
        raise ValueError("min_per_part must not be negative")
    if len(labels) < n_parts * min_per_part:
        raise ValueError(
            f"{len(labels)} samples cannot give {n_parts} parts {min_per_part} samples each"
        )
    rng = np.random.default_rng(seed)
    label_array = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    for label in np.unique(label_array):
        indices = np.flatnonzero(label_array == label)
        rng.shuffle(indices)
        shares = rng.dirichlet(np.full(n_parts, alpha))
        cuts = np.rint(np.cumsum(shares)[:-1] * len(indices)).astype(int)
        for part, chunk in zip(parts, np.split(indices, cuts), strict=True):
            part.extend(chunk.tolist())
    _top_up(parts, min_per_part, rng)
    return [sorted(part) for part in parts]


def _top_up(parts: list[list[int]], minimum: int, rng: np.random.Generator) -> None:
    """Move random samples from the largest part into parts below ``minimum``.

    Terminates because the caller checked there are at least n_parts * minimum samples:
    while some part is short, the largest one holds more than ``minimum``.
    """
    for part in parts:
        while len(part) < minimum:
            donor = max(parts, key=len)
            part.append(donor.pop(int(rng.integers(len(donor)))))


def partition_by_column(
    records_or_values: Sized, column_values: Sequence[str]
) -> dict[str, list[int]]:
    """Group the indices of ``records_or_values`` by ``column_values[i]`` (e.g. a site).

    ``column_values`` runs parallel to the records; the result is keyed by value in
    sorted order, with indices ascending. Empty values are refused rather than silently
    forming a site of their own.
    """
    if len(records_or_values) != len(column_values):
        raise ValueError(f"{len(column_values)} column values for {len(records_or_values)} records")
    parts: dict[str, list[int]] = {}
    for i, value in enumerate(column_values):
        key = "" if value is None else str(value).strip()
        if not key:
            raise ValueError(f"record {i} has an empty column value")
        parts.setdefault(key, []).append(i)
    return dict(sorted(parts.items()))
