"""Bearer tokens: generation, hashing for storage, constant-time comparison, header parsing.

Tokens are random and high-entropy, so a plain sha256 is an adequate storage hash (no slow
password hash needed); comparisons go through ``hmac.compare_digest`` so timing reveals
nothing about how much of a guess matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


class BearerError(ValueError):
    """The Authorization header is missing or not ``Bearer <token>``."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time equality of two tokens."""
    return hmac.compare_digest(given.encode(), expected.encode())


def caller_id(token: str) -> str:
    """A short, stable id for a token that can go into logs and audits (not the token)."""
    return "tok-" + hash_token(token)[:16]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; raises :class:`BearerError`."""
    if not authorization:
        raise BearerError("missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BearerError("Authorization header must be 'Bearer <token>'")
    return token.strip()
