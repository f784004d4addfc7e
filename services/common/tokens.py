"""Bearer tokens: generation, hashing for storage, constant-time comparison, header parsing.

Tokens are random and high-entropy, so a plain sha256 is an adequate storage hash (no slow
password hash needed); comparisons go through ``hmac.compare_digest`` so timing reveals
nothing about how much of a guess matched.

:data:`BearerToken` is the one way a route of any service receives the caller's token: it
declares the ``HTTPBearer`` security scheme (so the OpenAPI lists it and Swagger's
Authorize button works) and answers our own 401 problem for a missing or malformed header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.problems import Unauthenticated

BEARER_SCHEME = HTTPBearer(
    auto_error=False,  # our dependency answers the 401, as a problem naming what is wrong
    description="`Authorization: Bearer <token>` with a token of this service.",
)


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
    """The token of an ``Authorization: Bearer <token>`` header, else :class:`Unauthenticated`."""
    if not authorization:
        raise Unauthenticated("missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()


def presented_token(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)],
) -> str:
    """The caller's bearer token (not yet checked against anything); 401 when absent."""
    return bearer_token(request.headers.get("authorization"))


BearerToken = Annotated[str, Depends(presented_token)]
"""Dependency: the caller's bearer token; each service then decides who that is."""
