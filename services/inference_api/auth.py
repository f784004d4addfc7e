"""Bearer tokens: clinicians may predict, an optional admin token may operate the service.

Tokens are kept only as sha256 digests and compared in constant time, against every
known token, so neither the timing nor an early exit reveals how much of a guess matched.
A caller is identified in logs and the audit trail by a short hash of its token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from services.common.tokens import caller_id, hash_token, tokens_equal


class Role(StrEnum):
    clinician = "clinician"
    admin = "admin"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a role and an id derived from (not equal to) the token."""

    role: Role
    id: str


class TokenRegistry:
    """The tokens this service accepts and the role each one grants."""

    def __init__(self, clinician_tokens: Iterable[str], admin_token: str = "") -> None:
        self._entries = [(hash_token(t), Role.clinician) for t in clinician_tokens if t]
        if admin_token:
            self._entries.append((hash_token(admin_token), Role.admin))

    def identify(self, token: str) -> Caller | None:
        """The caller holding ``token``, or None for an unknown token."""
        digest = hash_token(token)
        found: Caller | None = None
        for known, role in self._entries:  # no early exit: constant time in the match
            if tokens_equal(digest, known) and found is None:
                found = Caller(role, caller_id(token))
        return found
