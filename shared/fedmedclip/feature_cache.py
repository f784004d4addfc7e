"""On-disk cache of frozen image embeddings.

The CLIP encoders never change, so an image is encoded once per (image content, backbone,
preprocessing) and training afterwards only reads vectors. This is the main reason local
training costs a small fraction of fine-tuning the encoder.

Layout: ``ROOT/<key[:2]>/<key>.npy`` with ``key = sha256(image sha256 | backbone id |
preprocess id)``; files are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fedmedclip.backbone import Backbone
from fedmedclip.data.images import decode_image


class FeatureCache:
    """Content-addressed embedding store for one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image_sha256: str, backbone: Backbone) -> str:
        text = f"{image_sha256}|{backbone.id}|{backbone.preprocess_id}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError):
            return None  # a damaged entry is re-encoded rather than trusted

    def put(self, key: str, vector: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, vector.astype(np.float32), allow_pickle=False)
        os.replace(tmp, path)

    def encode_files(
        self,
        backbone: Backbone,
        paths: Sequence[Path],
        *,
        batch_size: int = 32,
        max_pixels: int = 50_000_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Embeddings (N x D) of image files, encoding only those not cached yet.

        ``progress(done, total)`` is called as images are resolved.
        """
        vectors: list[np.ndarray | None] = [None] * len(paths)
        pending: list[tuple[int, str, object]] = []

        def flush() -> None:
            if not pending:
                return
            encoded = backbone.encode_images([img for _, _, img in pending]).numpy()
            for (index, key, _), vec in zip(pending, encoded, strict=True):
                self.put(key, vec)
                vectors[index] = vec
            pending.clear()

        for index, path in enumerate(paths):
            data = Path(path).read_bytes()
            key = self.key(hashlib.sha256(data).hexdigest(), backbone)
            cached = self.get(key)
            if cached is not None:
                self.hits += 1
                vectors[index] = cached
            else:
                self.misses += 1
                pending.append((index, key, decode_image(data, max_pixels=max_pixels)))
                if len(pending) >= batch_size:
                    flush()
            if progress:
                progress(index + 1, len(paths))
        flush()
        if not paths:
            return torch.empty(0, backbone.dim)
        return torch.from_numpy(np.stack(vectors))
