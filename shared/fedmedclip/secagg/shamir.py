"""Shamir sharing of 32-byte secrets, on PyCryptodome's vetted implementation.

``Crypto.Protocol.SecretSharing.Shamir`` shares 16-byte secrets over GF(2^128). A 32-byte
secret (an X25519 private key or a mask seed) is shared as its two halves with the same
share indices, so one share is ``(index, 32 bytes)``. Any ``threshold`` shares rebuild the
secret; fewer reveal nothing about it, and give a wrong value rather than an error, which is
why callers count shares before combining and check rebuilt keys against their public key.
"""

from __future__ import annotations

from Crypto.Protocol.SecretSharing import Shamir

SECRET_BYTES = 32
_HALF = SECRET_BYTES // 2

Share = tuple[int, bytes]


def split_secret(secret: bytes, threshold: int, count: int) -> list[Share]:
    """``count`` shares with indices 1..count, any ``threshold`` of which rebuild ``secret``."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= count:
        raise ValueError(f"need 1 <= threshold <= count, got {threshold} of {count}")
    low = Shamir.split(threshold, count, secret[:_HALF])
    high = Shamir.split(threshold, count, secret[_HALF:])
    # Both calls number their shares 1..count in order, so the halves pair up by position.
    return [(i, a + b) for (i, a), (_, b) in zip(low, high, strict=True)]


def combine_shares(shares: list[Share]) -> bytes:
    """The secret behind ``shares`` (the caller guarantees at least the threshold)."""
    if len({index for index, _ in shares}) != len(shares):
        raise ValueError("duplicate share indices")
    low = Shamir.combine([(i, s[:_HALF]) for i, s in shares])
    high = Shamir.combine([(i, s[_HALF:]) for i, s in shares])
    return low + high
