"""The site model store: global FAM versions and private head versions on local disk.

The hospital node writes it, the site's inference API reads it; both go through this
module, so they agree on the layout without importing each other:

    ROOT/global/v000007.safetensors   global shared adapter, version 7
    ROOT/heads/h000003.safetensors    private head 3 (metadata names its FAM version)
    ROOT/heads/h000003.pairing.safetensors
                                      a sample of the site's training features, with which
                                      the reader re-pairs head 3 with any global version
    ROOT/current.json                 {"global_version": 7, "head_version": 3}

Tensors are safetensors (never pickle); metadata is one JSON string in the safetensors
header under the key ``fedmedclip``. Files are written to a temporary name and renamed, so
a reader never sees half a file.

A head's metadata is the typed :class:`HeadMetadata`: the node writes it and the inference
API reads it, possibly at different software versions, so unknown keys are ignored on read
and every key added later must have a default.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedmedclip.ensemble import Combination
from fedmedclip.prediction import Temperatures

_META_KEY = "fedmedclip"


class ModelBlobError(ValueError):
    """A model blob is not a valid safetensors file with FedMedCLIP metadata."""


def encode_blob(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> bytes:
    """Serialise tensors and JSON metadata into safetensors bytes."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return st_save(contiguous, metadata={_META_KEY: json.dumps(dict(meta), sort_keys=True)})


def decode_blob(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse safetensors bytes written by :func:`encode_blob` (no pickle involved)."""
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get(_META_KEY, "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ModelBlobError(f"not a valid model blob: {exc}") from exc
    return tensors, meta


def blob_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class HeadMetadata(BaseModel):
    """What a private head was trained from and with, stored in the head's blob.

    ``global_version`` names the FAM version the head was trained with; the task fields
    (``class_names`` to ``backbone_id``) let the node reuse the head in a later round only
    for the same task and backbone. Heads written before a field existed lack it, hence the
    defaults.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    global_version: int = Field(ge=0, description="The FAM version the head was trained with.")
    version: int | None = Field(
        None, ge=1, description="The head version; set by the store when it writes the head."
    )
    round_id: int | None = None
    temperatures: Temperatures = Field(default_factory=Temperatures)
    combination: Combination = Field(
        default_factory=Combination,
        description="How the site combines its branches (chosen on its validation split); "
        "heads from before the choice existed get the paper's entropy ensemble.",
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    class_names: list[str] | None = None
    prompt_template: str | None = None
    backbone: str | None = None
    weights: str | None = None
    backbone_id: str | None = None
    class_counts: list[int] | None = Field(
        None,
        description="Training images per class (task order): the prior that the inference "
        "API compares its predicted-class distribution with.",
    )

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, temperatures: Temperatures) -> Temperatures:
        if not (0 < temperatures.fam < float("inf") and 0 < temperatures.head < float("inf")):
            raise ValueError(f"temperatures must be positive numbers, got {temperatures}")
        return temperatures


@dataclass(frozen=True)
class StoredModel:
    """Tensors and metadata of one stored global model, with the sha256 of its bytes."""

    version: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    sha256: str


@dataclass(frozen=True)
class StoredHead:
    """Tensors and typed metadata of one stored private head, with the sha256 of its bytes."""

    version: int
    tensors: dict[str, torch.Tensor]
    meta: HeadMetadata
    sha256: str


@dataclass(frozen=True)
class CurrentModels:
    """What the site serves: a global version and a head version (None before training)."""

    global_version: int
    head_version: int | None


class ModelStore:
    """Versioned global adapters and private heads in one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _global_path(self, version: int) -> Path:
        return self.root / "global" / f"v{version:06d}.safetensors"

    def _head_path(self, version: int) -> Path:
        return self.root / "heads" / f"h{version:06d}.safetensors"

    def save_global_blob(self, version: int, blob: bytes) -> None:
        """Store a global model blob exactly as the hub served it (sha256 preserved)."""
        decode_blob(blob)
        _atomic_write(self._global_path(version), blob)

    def has_global(self, version: int) -> bool:
        return self._global_path(version).exists()

    def load_global(self, version: int) -> StoredModel:
        data = self._global_path(version).read_bytes()
        tensors, meta = decode_blob(data)
        return StoredModel(version, tensors, meta, blob_sha256(data))

    def head_versions(self) -> list[int]:
        folder = self.root / "heads"
        if not folder.exists():
            return []
        found = (re.fullmatch(r"h(\d+)\.safetensors", p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _pairing_path(self, version: int) -> Path:
        return self.root / "heads" / f"h{version:06d}.pairing.safetensors"

    def save_head(
        self,
        tensors: Mapping[str, torch.Tensor],
        meta: HeadMetadata,
        pairing_features: torch.Tensor | None = None,
    ) -> int:
        """Store a new private head version (``meta.version`` is set to it); return it.

        ``pairing_features`` (site-private embeddings, see ``fedmedclip.heads.pairing_sample``) are
        written first, so a head that has them is never visible without them.
        """
        version = (self.head_versions() or [0])[-1] + 1
        if pairing_features is not None:
            blob = encode_blob({"features": pairing_features.float()}, {"head_version": version})
            _atomic_write(self._pairing_path(version), blob)
        stamped = meta.model_copy(update={"version": version})
        blob = encode_blob(tensors, stamped.model_dump(mode="json", exclude_none=True))
        _atomic_write(self._head_path(version), blob)
        return version

    def load_pairing_features(self, head_version: int) -> torch.Tensor | None:
        """The features stored with a head for re-pairing, or None when it has none."""
        path = self._pairing_path(head_version)
        if not path.exists():
            return None
        tensors, _ = decode_blob(path.read_bytes())
        features = tensors.get("features")
        if features is None or features.ndim != 2:
            raise ModelBlobError(f"pairing features of head {head_version} are not a matrix")
        return features

    def load_head(self, version: int) -> StoredHead:
        """Head ``version``; raise ModelBlobError when its blob or its metadata is invalid."""
        data = self._head_path(version).read_bytes()
        tensors, raw = decode_blob(data)
        try:
            meta = HeadMetadata.model_validate(raw)
        except ValidationError as exc:
            raise ModelBlobError(f"head {version} has invalid metadata: {exc}") from exc
        return StoredHead(version, tensors, meta, blob_sha256(data))

    def set_current(self, global_version: int, head_version: int | None) -> None:
        payload = {"global_version": global_version, "head_version": head_version}
        _atomic_write(self.root / "current.json", json.dumps(payload).encode())

    def current(self) -> CurrentModels | None:
        path = self.root / "current.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return CurrentModels(int(data["global_version"]), data.get("head_version"))
