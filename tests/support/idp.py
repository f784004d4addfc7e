"""A test identity provider: real keys, real signed JWTs, a JWKS served over HTTP on loopback.

Services verify these tokens exactly as they would a hospital IdP's: they fetch the JWKS
from ``jwks_url`` and check signature, issuer, audience and expiry. ``rotate()`` replaces
the signing key the way an IdP rolls its keys.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from tests.support.processes import ThreadedServer

ISSUER = "https://idp.hospital.test/realms/radiology"
AUDIENCE = "fedmedclip"


class TestIdp:
    """Signs JWTs with its current RSA key and publishes the public keys as a JWKS."""

    __test__ = False  # not a test class, despite the name

    def __init__(self) -> None:
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.fetches = 0
        self.rotate()
        app = FastAPI()

        @app.get("/jwks")
        def jwks() -> dict[str, Any]:
            self.fetches += 1
            published = []
            for kid, key in self.keys:
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
                published.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
            return {"keys": published}

        self.server = ThreadedServer(app)

    def rotate(self, *, keep_old: bool = False) -> None:
        """A new signing key; the old one stays published only with ``keep_old``."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        entry = (uuid.uuid4().hex[:12], key)
        self.keys = [*self.keys, entry] if keep_old else [entry]

    @property
    def jwks_url(self) -> str:
        return f"{self.server.url}/jwks"

    def token(
        self,
        sub: str = "alice",
        *,
        roles: list[str] | None = None,
        name: str | None = "Alice Example",
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        expires_in: float = 300,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
    ) -> str:
        """A signed JWT; every argument can be made wrong on purpose."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": sub,
            "iat": now,
            "exp": now + int(expires_in),
            "realm_access": {"roles": roles or []},
        }
        if name:
            claims["name"] = name
        current_kid, current_key = self.keys[-1]
        return jwt.encode(
            claims,
            key or current_key,
            algorithm="RS256",
            headers={"kid": kid or current_kid},
        )

    def __enter__(self) -> TestIdp:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
