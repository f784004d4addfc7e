"""Reading files whose size nobody vouches for: hash them in chunks, never whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read 1 MiB at a time so memory does not grow with its size."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
