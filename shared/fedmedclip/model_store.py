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
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

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


@dataclass(frozen=True)
class StoredModel:
    """Tensors and metadata of one stored artefact, with the sha256 of its bytes."""

    version: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
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
        meta: Mapping[str, Any],
        pairing_features: torch.Tensor | None = None,
    ) -> int:
        """Store a new private head version; ``meta`` should name its ``global_version``.

        ``pairing_features`` (site-private embeddings, see ``trainer.pairing_sample``) are
        written first, so a head that has them is never visible without them.
        """
        version = (self.head_versions() or [0])[-1] + 1
        if pairing_features is not None:
            blob = encode_blob({"features": pairing_features.float()}, {"head_version": version})
            _atomic_write(self._pairing_path(version), blob)
        _atomic_write(self._head_path(version), encode_blob(tensors, {**meta, "version": version}))
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

    def load_head(self, version: int) -> StoredModel:
        data = self._head_path(version).read_bytes()
        tensors, meta = decode_blob(data)
        return StoredModel(version, tensors, meta, blob_sha256(data))

    def set_current(self, global_version: int, head_version: int | None) -> None:
        payload = {"global_version": global_version, "head_version": head_version}
        _atomic_write(self.root / "current.json", json.dumps(payload).encode())

    def current(self) -> CurrentModels | None:
        path = self.root / "current.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return CurrentModels(int(data["global_version"]), data.get("head_version"))
