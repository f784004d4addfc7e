"""Loading backbone weights from a local checkpoint never runs code from the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from fedmedclip.backbone import BackboneError, load_backbone


class _Planted:
    """Unpickling this object creates ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_in_a_checkpoint_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "weights.pt"
    with checkpoint.open("wb") as out:
        torch.save({"state_dict": {"proj": _Planted(marker)}}, out, pickle_module=pickle)
    with pytest.raises(BackboneError, match="could not read checkpoint"):
        load_backbone("ViT-S-32", str(checkpoint))
    assert not marker.exists()


def test_a_plain_state_dict_checkpoint_loads(tmp_path: Path) -> None:
    """The same loader accepts tensors only, so the refusal above is about the payload."""
    random = load_backbone("ViT-S-32", "none")
    checkpoint = tmp_path / "weights.pt"
    torch.save(random.model.state_dict(), checkpoint)
    loaded = load_backbone("ViT-S-32", str(checkpoint))
    assert loaded.id.startswith("ViT-S-32/sha256-")
    probe = torch.rand(1, 3, 224, 224)
    assert torch.allclose(loaded.encode_tensors(probe), random.encode_tensors(probe))
