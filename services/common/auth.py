"""Who is calling: a bearer token resolved to a caller with roles, for every service.

A service accepts two kinds of bearer token for people and tools:

* static tokens from its settings (bootstrap and automation), each granting one role; they
  are read through ``ServiceSettings.live_secret`` on every check, so a secret file
  rotated by Kubernetes takes effect without a restart;
* with single sign-on configured (``OIDC_*``), JWTs from the hospital's identity
  provider, verified by :class:`services.common.identity.JwtVerifier`; the person's roles
  come from the IdP's claim through the operator's role map.

:class:`Authenticator` combines both; the hub adds node tokens (stored in its database)
on top. A token that matches no static token and is not a JWT (or single sign-on is off)
is unknown here: the caller decides whether that is a 401 or worth another lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from services.common.identity import JwtVerifier, Person, looks_like_jwt
from services.common.problems import Forbidden, Unauthenticated
from services.common.settings import ServiceSettings
from services.common.tokens import hash_token, tokens_equal

PERSON_PREFIX = "person:"
ACTOR_MAX_CHARS = 120
"""Audit actors are stored in a 120-character column; a long name is cut to fit."""


def person_actor(person: Person) -> str:
    """How a person appears in audit trails: ``person:alice (Alice Example)``."""
    return (PERSON_PREFIX + person.label)[:ACTOR_MAX_CHARS]


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its roles and how audits name it.

    ``person`` is set for a JWT (the audit names the person); static tokens name a role or
    a hash of the token instead.
    """

    roles: frozenset[str]
    actor: str
    person: Person | None = None

    def require(self, roles: Collection[str]) -> Caller:
        """``self`` when it holds one of ``roles``, else :class:`Forbidden` naming them."""
        if self.roles & set(roles):
            return self
        needed = " or ".join(sorted(roles))
        if self.person is not None:
            held = ", ".join(sorted(self.person.roles)) or "none of this service's roles"
            raise Forbidden(
                f"this route needs the {needed} role; {self.person.subject!r} holds {held}"
            )
        held = " or ".join(sorted(self.roles))
        raise Forbidden(f"this route needs a {needed} token, not a {held} token")


def revealed(value: Any) -> list[str]:
    """The non-empty token strings of a secret setting's value (one secret or a list)."""
    items = value if isinstance(value, list | tuple) else [value]
    tokens = [item.get_secret_value() if isinstance(item, SecretStr) else item for item in items]
    return [token for token in tokens if isinstance(token, str) and token]


@dataclass(frozen=True)
class StaticToken:
    """Tokens of one secret setting, the role they grant and how audits name the holder."""

    role: str
    current: Callable[[], Any]  # ServiceSettings.live_secret(...): the setting's value now
    actor: Callable[[str], str]  # token -> audit name (never the token itself)


@dataclass
class Authenticator:
    """Resolves a bearer token with the service's static tokens and optional IdP."""

    static: list[StaticToken] = field(default_factory=list)
    verifier: JwtVerifier | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings, *static: StaticToken) -> Authenticator:
        """With a :class:`JwtVerifier` when the settings configure single sign-on."""
        config = settings.oidc_config()
        return cls(list(static), JwtVerifier(config) if config is not None else None)

    def static_tokens(self) -> Iterable[tuple[StaticToken, str]]:
        for entry in self.static:
            for token in revealed(entry.current()):
                yield entry, token

    def identify(self, token: str) -> Caller | None:
        """The caller holding ``token``; None when it is no token this knows.

        Static tokens are compared in constant time against every configured one (no
        early exit). A JWT is verified only with single sign-on on; a bad one raises
        :class:`Unauthenticated` naming the reason. Blocking (the IdP's keys may be
        fetched): call from a worker thread, as FastAPI runs sync dependencies.
        """
        digest = hash_token(token)
        found: Caller | None = None
        for entry, known in self.static_tokens():
            if tokens_equal(digest, hash_token(known)) and found is None:
                found = Caller(frozenset({entry.role}), entry.actor(token))
        if found is not None:
            return found
        if self.verifier is not None and looks_like_jwt(token):
            person = self.verifier.verify(token)
            return Caller(person.roles, person_actor(person), person)
        return None

    def require(self, token: str, roles: Collection[str], *, unknown: str) -> Caller:
        """The caller of ``token`` holding one of ``roles``: 401 with ``unknown`` for a token
        this does not know, 403 for a known caller without the role."""
        caller = self.identify(token)
        if caller is None:
            raise Unauthenticated(unknown)
        return caller.require(roles)
