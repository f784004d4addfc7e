"""Secrets read from files that may change while the service runs.

Kubernetes updates a mounted Secret in place: it writes the new content to a fresh
directory and swaps the ``..data`` symlink the file's path goes through, so the path
stays the same while the file behind it (its inode) changes. Docker secrets and plain
files are rewritten or replaced. :class:`SecretFile` notices all of these by stat-ing the
*path* (following symlinks) and comparing device, inode, modification time and size, and
re-reads the content when any of them changed. The check runs at most once per
``check_seconds``, so a busy service does not stat on every request.

A file that cannot be read or parsed for a moment (half-written, briefly missing during
a swap) keeps the last good value: refusing every request because a rotation is in
flight would turn a routine rotation into an outage. The failure is logged, and the
next check tries again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_SECONDS = 1.0
"""How often a secret file is looked at, at most."""

Stamp = tuple[int, int, int, int]


def read_secret_text(path: str | Path) -> str:
    """A secret file's content without the final newline editors and ``echo`` add."""
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def _stamp(path: Path) -> Stamp:
    info = os.stat(path)  # follows the symlinks Kubernetes swaps
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


class SecretFile(Generic[T]):
    """The current value of a secret file, re-read when the file changes.

    ``parse`` turns the file's text into the value (a token, a list of tokens); a
    ``ValueError`` from it, like an unreadable file, keeps the previous value. The first
    read happens here, and its errors propagate: a service must not start without its
    secret. Safe to call from several threads.
    """

    def __init__(
        self,
        path: str | Path,
        parse: Callable[[str], T],
        *,
        name: str = "secret",
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.check_seconds = check_seconds
        self._parse = parse
        self._lock = threading.Lock()
        # Stamp before reading: a change in between is then seen at the next check.
        self._stamp = _stamp(self.path)
        self._value = parse(read_secret_text(self.path))
        self._checked = time.monotonic()

    def __eq__(self, other: object) -> bool:
        """Two handles of the same file are the same secret (settings compare equal)."""
        return isinstance(other, SecretFile) and (other.path, other.name) == (self.path, self.name)

    def __hash__(self) -> int:
        return hash((self.path, self.name))

    def get(self) -> T:
        """The secret's value as of at most ``check_seconds`` ago."""
        if time.monotonic() - self._checked < self.check_seconds:
            return self._value
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.check_seconds:
                self._checked = now
                self._refresh()
            return self._value

    def _refresh(self) -> None:
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            value = self._parse(read_secret_text(self.path))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning(
                "%s: cannot re-read %s (%s); keeping the previous value",
                self.name,
                self.path,
                type(exc).__name__,  # never the message: a parse error may quote the secret
            )
            return
        self._value, self._stamp = value, stamp
        log.info("%s: re-read %s after it changed", self.name, self.path)
