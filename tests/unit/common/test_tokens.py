"""Bearer tokens: random, and stored only as their sha256."""

from __future__ import annotations

from services.common.tokens import hash_token, new_token


def test_tokens_are_random_and_stored_only_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 40
    assert hash_token(first) != hash_token(second)
    assert len(hash_token(first)) == 64 and first not in hash_token(first)
