"""A FAM delta as the one flat vector secure aggregation masks, and back.

Sites and hub must agree on the order of the coordinates without exchanging it: tensors go
in the sorted order of their names, each flattened row-major, with the shapes the task
defines (``fedmedclip.model.expected_shapes``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch


def dimension(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """How many values a flattened delta of these shapes has."""
    return sum(math.prod(shape) for shape in shapes.values())


def flatten_delta(
    delta: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]
) -> np.ndarray:
    """The delta's values in the agreed order (float64); refuses missing or odd tensors."""
    if set(delta) != set(shapes):
        raise ValueError(f"delta tensors {sorted(delta)} differ from the task's {sorted(shapes)}")
    parts = []
    for name in sorted(shapes):
        tensor = delta[name]
        if tuple(tensor.shape) != tuple(shapes[name]):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shapes[name]}")
        parts.append(tensor.detach().cpu().double().reshape(-1).numpy())
    return np.concatenate(parts) if parts else np.zeros(0)


def unflatten_delta(
    values: np.ndarray, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Tensors (float32) of ``shapes`` from a flat vector in the agreed order."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size != dimension(shapes):
        raise ValueError(f"vector of {values.size} values, the shapes need {dimension(shapes)}")
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name in sorted(shapes):
        size = math.prod(shapes[name])
        chunk = values[start : start + size].reshape(shapes[name])
        out[name] = torch.from_numpy(chunk.astype(np.float32))
        start += size
    return out
