"""The flat vector order sites and hub agree on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmedclip.secagg.vectors import dimension, flatten_delta, unflatten_delta

SHAPES = {"b.weight": (3, 2), "a.bias": (4,)}


def test_a_delta_round_trips_in_name_order() -> None:
    delta = {"b.weight": torch.arange(6.0).reshape(3, 2), "a.bias": torch.tensor([9.0, 8, 7, 6])}
    flat = flatten_delta(delta, SHAPES)
    assert dimension(SHAPES) == 10
    np.testing.assert_array_equal(flat, [9, 8, 7, 6, 0, 1, 2, 3, 4, 5])  # a.bias first
    back = unflatten_delta(flat, SHAPES)
    assert all(torch.equal(back[k], delta[k]) for k in SHAPES)


def test_odd_deltas_and_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="differ from the task"):
        flatten_delta({"a.bias": torch.zeros(4)}, SHAPES)
    with pytest.raises(ValueError, match="has shape"):
        flatten_delta({"a.bias": torch.zeros(5), "b.weight": torch.zeros(3, 2)}, SHAPES)
    with pytest.raises(ValueError, match="vector of 9 values"):
        unflatten_delta(np.zeros(9), SHAPES)
