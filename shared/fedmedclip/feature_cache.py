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
from fedmedclip.data.images import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    check_file_size,
    decode_image,
    read_image_bytes,
)
from fedmedclip.files import sha256_file


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
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Embeddings (N x D) of image files, encoding only those not cached yet.

        A file over ``max_bytes`` is refused (ImageDecodeError) from its size alone. The
        content hash is computed in chunks, so a cache hit never holds the file in memory;
        a miss reads the file once, capped, and keys the entry by the bytes it decoded.
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
            check_file_size(path, max_bytes=max_bytes)
            cached = self.get(self.key(sha256_file(path), backbone))
            if cached is not None:
                self.hits += 1
                vectors[index] = cached
            else:
                self.misses += 1
                data = read_image_bytes(path, max_bytes=max_bytes)
                key = self.key(hashlib.sha256(data).hexdigest(), backbone)
                image = decode_image(data, max_pixels=max_pixels, min_side=backbone.decode_side)
                pending.append((index, key, image))
                if len(pending) >= batch_size:
                    flush()
            if progress:
                progress(index + 1, len(paths))
        flush()
        if not paths:
            return torch.empty(0, backbone.dim)
        return torch.from_numpy(np.stack(vectors))
