"""Secret files re-read when they change: rewritten in place, or swapped like Kubernetes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from services.common.secrets import SecretFile, read_secret_text


def _parse_tokens(text: str) -> list[str]:
    tokens = [t for t in text.split(",") if t]
    if not tokens:
        raise ValueError("no token")
    return tokens


def test_a_rewritten_file_is_seen_after_the_check_period(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    secret = SecretFile(path, str, check_seconds=0.2)
    assert secret.get() == "first"
    path.write_text("second\n")
    assert secret.get() == "first"  # not looked at again within the period
    time.sleep(0.25)
    assert secret.get() == "second"


def test_a_swapped_symlink_is_followed(tmp_path: Path) -> None:
    """Kubernetes: ``token`` -> ``..data/token``, ``..data`` swapped to a new directory."""
    for version, value in (("v1", "old"), ("v2", "new")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "token").write_text(value)
        # Same size and, within the clock's resolution, maybe the same mtime: the inode differs.
        os.utime(tmp_path / version / "token", ns=(0, 0))
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "token").symlink_to("..data/token")
    secret = SecretFile(tmp_path / "token", str, check_seconds=0)
    assert secret.get() == "old"
    (tmp_path / "..tmp").symlink_to("v2")
    os.replace(tmp_path / "..tmp", tmp_path / "..data")
    assert secret.get() == "new"


def test_a_bad_or_missing_file_keeps_the_last_good_value(tmp_path: Path, caplog) -> None:
    path = tmp_path / "tokens"
    path.write_text("a,b")
    secret = SecretFile(path, _parse_tokens, name="TOKENS_FILE", check_seconds=0)
    path.write_text("")
    with caplog.at_level(logging.WARNING, logger="services.common.secrets"):
        assert secret.get() == ["a", "b"]
    assert "TOKENS_FILE" in caplog.text and "ValueError" in caplog.text
    path.unlink()
    assert secret.get() == ["a", "b"]
    path.write_text("c")
    assert secret.get() == ["c"]  # retried at the next check once the file is good


def test_the_first_read_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SecretFile(tmp_path / "absent", str)
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="no token"):
        SecretFile(tmp_path / "empty", _parse_tokens)


def test_only_the_final_newline_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "s").write_text(" spaced secret \r\n")
    assert read_secret_text(tmp_path / "s") == " spaced secret "
