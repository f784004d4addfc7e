"""The site model store: global blobs, typed private heads, pairing features."""

import json

import pytest
import torch
from safetensors.torch import save as st_save

from fedmedclip.model import AdapterConfig, adapter_state, build_adapter, build_head
from fedmedclip.model_store import (
    HeadMetadata,
    ModelBlobError,
    ModelStore,
    decode_blob,
    encode_blob,
)
from fedmedclip.prediction import Temperatures

CONFIG = AdapterConfig(dim=32, n_classes=3)


def test_model_store_round_trip(tmp_path):
    store = ModelStore(tmp_path)
    assert store.current() is None
    state = adapter_state(build_adapter(CONFIG))
    blob = encode_blob(state, {"version": 4, "task": {"class_names": ["a", "b", "c"]}})
    store.save_global_blob(4, blob)
    loaded = store.load_global(4)
    assert loaded.meta["version"] == 4
    assert all(torch.equal(loaded.tensors[k], state[k]) for k in state)
    head = build_head(CONFIG).state_dict()
    assert store.save_head(head, HeadMetadata(global_version=4)) == 1
    assert store.save_head(head, HeadMetadata(global_version=4)) == 2
    store.set_current(4, 2)
    assert store.current().head_version == 2
    assert store.load_head(2).meta.version == 2
    with pytest.raises(ModelBlobError):
        decode_blob(b"not safetensors at all")


def test_heads_keep_their_pairing_features(tmp_path):
    store = ModelStore(tmp_path)
    head = build_head(CONFIG).state_dict()
    sample = torch.randn(20, 32, generator=torch.Generator().manual_seed(3))
    meta = HeadMetadata(global_version=1)
    with_features = store.save_head(head, meta, pairing_features=sample)
    without = store.save_head(head, meta)
    assert torch.equal(store.load_pairing_features(with_features), sample)
    assert store.load_pairing_features(without) is None
    assert store.head_versions() == [1, 2]  # the features file is not a head


def test_head_metadata_round_trips_typed(tmp_path):
    store = ModelStore(tmp_path)
    meta = HeadMetadata(
        global_version=3,
        round_id=7,
        temperatures=Temperatures(fam=1.5, head=0.8),
        metrics={"test_accuracy": 0.75},
        class_names=["a", "b", "c"],
        prompt_template="a picture of a {}.",
        backbone="ViT-S-32",
        weights="none",
        backbone_id="ViT-S-32/random",
    )
    version = store.save_head(build_head(CONFIG).state_dict(), meta)
    loaded = store.load_head(version).meta
    assert loaded == meta.model_copy(update={"version": version})
    assert loaded.temperatures == Temperatures(fam=1.5, head=0.8)


def _legacy_head(path, meta: dict) -> None:
    """A head blob as the node wrote it before HeadMetadata: a plain dict in the header."""
    tensors = {k: v.contiguous() for k, v in build_head(CONFIG).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(st_save(tensors, metadata={"fedmedclip": json.dumps(meta)}))


def test_heads_written_as_plain_json_still_load(tmp_path):
    store = ModelStore(tmp_path)
    _legacy_head(
        tmp_path / "heads" / "h000001.safetensors",
        {
            "global_version": 2,
            "round_id": 5,
            "temperatures": {"fam": 1.25, "head": 2.0},
            "metrics": {"train_loss": 0.5, "test_accuracy": 0.9},
            "class_names": ["a", "b", "c"],
            "prompt_template": "a picture of a {}.",
            "backbone": "ViT-S-32",
            "weights": "none",
            "backbone_id": "ViT-S-32/random",
            "version": 1,
        },
    )
    # The oldest heads (and the test stores) carry only the FAM version and temperatures.
    _legacy_head(
        tmp_path / "heads" / "h000002.safetensors",
        {"global_version": 2, "temperatures": {"fam": 1.0, "head": 1.0}, "version": 2},
    )
    full, minimal = store.load_head(1).meta, store.load_head(2).meta
    assert (full.version, full.global_version, full.round_id) == (1, 2, 5)
    assert full.temperatures == Temperatures(fam=1.25, head=2.0)
    assert full.metrics == {"train_loss": 0.5, "test_accuracy": 0.9}
    assert full.class_names == ["a", "b", "c"] and full.backbone_id == "ViT-S-32/random"
    assert (minimal.version, minimal.round_id, minimal.metrics) == (2, None, {})
    assert minimal.class_names is None


@pytest.mark.parametrize(
    "meta",
    [
        {"round_id": 1},  # no FAM version
        {"global_version": 1, "temperatures": {"fam": 0.0, "head": 1.0}},
        {"global_version": 1, "temperatures": {"fam": "warm", "head": 1.0}},
        {"global_version": 1, "metrics": {"accuracy": "high"}},
    ],
)
def test_a_head_with_invalid_metadata_is_refused(tmp_path, meta):
    _legacy_head(tmp_path / "heads" / "h000001.safetensors", meta)
    with pytest.raises(ModelBlobError, match="head 1 has invalid metadata"):
        ModelStore(tmp_path).load_head(1)
