"""The node's training data path: the site's records embedded with the federation's class ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fedmedclip.backbone import cached_backbone
from fedmedclip.schemas import TaskSpec
from services.hospital_node.datasets import DatasetSource
from services.hospital_node.settings import NodeSettings
from services.hospital_node.training import site_features


class _Phases:
    """Collects the phases a job reports, as the node database would."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def phase(self, name: str, percent: float) -> None:
        self.names.append(name)

    def epoch(self, epoch: int, epochs: int, loss: float, percent: float) -> None:
        pass

    def uploading(self) -> None:
        pass


@pytest.mark.parametrize("missing", ["alpha", "gamma"])
def test_the_class_index_does_not_depend_on_which_classes_a_site_has(
    tmp_path: Path, missing: str
) -> None:
    """The task lists alpha, beta, gamma; a site without ``missing`` must label the rest with
    the federation's ids (beta is 1 even where alpha is absent), never its own folders'."""
    data = tmp_path / "data" / "site"
    present = [c for c in ("alpha", "beta", "gamma") if c != missing]
    for label in present:
        (data / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (16, 16), (i * 30, 40, 90)).save(data / label / f"{i}.png")
    settings = NodeSettings(data_roots=[tmp_path / "data"], data_dir=tmp_path / "node")
    task = TaskSpec(class_names=["alpha", "beta", "gamma"], backbone="ViT-S-32")
    features = site_features(
        settings,
        cached_backbone("ViT-S-32", "none", "cpu"),
        task,
        [DatasetSource(1, "site", data)],
        progress=_Phases(),
    )
    labels = (features.y_train, features.y_val, features.y_test)
    assert sum(len(y) for y in labels) == 12
    assert features.x_train.shape == (len(features.y_train), 384)
    assert {int(v) for y in labels for v in y} == {task.class_names.index(c) for c in present}


@pytest.mark.slow
def test_every_round_tests_the_head_on_the_same_images(tmp_path: Path) -> None:
    """The private head carries over between rounds: a split drawn anew each round would
    score it on images it trained on in an earlier round."""
    data = tmp_path / "data" / "site"
    for label in ("alpha", "beta"):
        (data / label).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (16, 16), (i * 12, 40 if label == "alpha" else 200, 90)).save(
                data / label / f"{i}.png"
            )
    settings = NodeSettings(data_roots=[tmp_path / "data"], data_dir=tmp_path / "node")
    task = TaskSpec(class_names=["alpha", "beta"], backbone="ViT-S-32")
    backbone = cached_backbone("ViT-S-32", "none", "cpu")
    source = [DatasetSource(1, "site", data)]
    first, second = (
        site_features(settings, backbone, task, source, progress=_Phases()) for _ in range(2)
    )
    assert len(first.y_test) > 0
    assert torch.equal(first.x_test, second.x_test) and torch.equal(first.x_train, second.x_train)
