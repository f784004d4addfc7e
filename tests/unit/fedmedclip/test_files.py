"""Hashing files of any size in chunks gives the same digest as hashing them whole."""

import hashlib
from pathlib import Path

from fedmedclip import files
from fedmedclip.files import sha256_file


def test_a_file_larger_than_a_chunk_hashes_as_a_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(files, "CHUNK_BYTES", 7)  # many chunks, the last one short
    data = bytes(range(256)) * 3
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_an_empty_file_has_the_empty_digest(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()
