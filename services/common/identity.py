"""People signed in through the hospital's identity provider: OpenID Connect bearer JWTs.

Admins (hub, node) and clinicians (inference API) may present a JWT from the hospital's
IdP instead of a static token. It is verified as any relying party verifies an ID or
access token, with PyJWT (no hand-written crypto):

* the signing key comes from the IdP's JWKS URL, fetched once, cached, and fetched again
  when a token names a key id the cache does not hold (the IdP rotated its keys), at most
  once per cooldown period;
* signature, ``iss``, ``aud``, ``exp`` (with a small leeway for clock skew) and ``sub`` are
  required; only asymmetric algorithms are accepted (an ``HS256`` token signed with the
  public key, or ``alg: none``, is refused);
* roles come from one claim (a dotted path such as ``realm_access.roles`` for Keycloak,
  ``roles`` for Entra ID, ``groups`` elsewhere), mapped to this service's roles by a
  table the operator sets (``{"radiology": "clinician", "fl-admins": "admin"}``).

Static tokens stay for bootstrap and automation; the audit trail records the person
(``sub`` and name) for a JWT and a token hash for a static token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from pydantic import BaseModel, Field, HttpUrl

from services.common.problems import Unauthenticated

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384", "EdDSA")


class OidcConfig(BaseModel):
    """Where the IdP's keys are and what a token must say to be accepted here."""

    issuer: str = Field(min_length=1, description="Expected `iss` claim (the IdP's issuer URL).")
    audience: str = Field(
        min_length=1, description="Expected `aud` claim (this service's client id)."
    )
    jwks_url: HttpUrl = Field(description="The IdP's JWKS endpoint.")
    role_claim: str = Field(
        "roles", description="Dotted path of the claim that lists roles/groups."
    )
    role_map: dict[str, str] = Field(
        default_factory=dict, description="IdP role or group -> this service's role."
    )
    name_claim: str = Field("name", description="Claim with the person's display name.")
    algorithms: list[str] = Field(default_factory=lambda: list(ASYMMETRIC_ALGORITHMS))
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    jwks_cache_seconds: float = Field(300, ge=10, description="How long fetched keys are trusted.")
    jwks_refresh_cooldown_seconds: float = Field(
        10,
        ge=0,
        description="Least time between two fetches caused by unknown key ids (so a flood of "
        "tokens with made-up key ids cannot make us hammer the IdP).",
    )


@dataclass(frozen=True)
class Person:
    """A person verified by the IdP: who (``sub``, name) and which of our roles they hold."""

    subject: str
    name: str | None
    roles: frozenset[str]

    @property
    def label(self) -> str:
        """How the person appears in an audit entry."""
        return f"{self.subject} ({self.name})" if self.name else self.subject


def looks_like_jwt(token: str) -> bool:
    """A compact JWS has three dot-separated parts; static tokens have none."""
    return token.count(".") == 2


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def map_roles(value: Any, role_map: Mapping[str, str]) -> frozenset[str]:
    """Our roles for a claim value (a string or a list of strings); unknown ones ignored."""
    names: Iterable[Any] = [value] if isinstance(value, str) else value or []
    if not isinstance(names, list | tuple):
        return frozenset()
    return frozenset(role_map[n] for n in names if isinstance(n, str) and n in role_map)


class JwtVerifier:
    """Verifies bearer JWTs against one IdP's keys and maps them to a :class:`Person`."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._keys = jwt.PyJWKClient(
            str(config.jwks_url),
            cache_keys=True,
            lifespan=config.jwks_cache_seconds,
            cooldown_duration=config.jwks_refresh_cooldown_seconds,
            timeout=5,
        )

    def verify(self, token: str) -> Person:
        """The person ``token`` names; :class:`Unauthenticated` naming the reason otherwise.

        Blocking (it may fetch the JWKS): call it from a worker thread in async code.
        """
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed bearer JWT: {exc}", code="invalid_jwt") from exc
        if header.get("alg") not in config.algorithms:
            raise Unauthenticated(
                f"JWT algorithm {str(header.get('alg'))[:20]!r} is not accepted", code="invalid_jwt"
            )
        try:
            key = self._keys.get_signing_key_from_jwt(token)  # refetches on an unknown kid
        except jwt.PyJWKClientConnectionError as exc:
            raise Unauthenticated(
                "the identity provider's keys cannot be fetched; retry later",
                code="jwks_unavailable",
            ) from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(
                "the JWT is signed with a key the identity provider does not publish",
                code="invalid_jwt",
            ) from exc
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=config.algorithms,
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the JWT has expired", code="jwt_expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(
                "the JWT is not meant for this service (aud)", code="invalid_jwt"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated(
                "the JWT comes from another issuer (iss)", code="invalid_jwt"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid JWT: {exc}", code="invalid_jwt") from exc
        name = claims.get(config.name_claim)
        return Person(
            subject=str(claims["sub"])[:200],
            name=str(name)[:200] if isinstance(name, str) and name else None,
            roles=map_roles(_claim(claims, config.role_claim), config.role_map),
        )
