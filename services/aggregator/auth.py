"""Bearer-token authentication for the admin and for hospital nodes.

The admin is whoever holds the static admin token (bootstrap, automation) or, with single
sign-on, a person whose identity-provider roles map to ``admin``; the audit trail names
that person. Node tokens are random (``services.common.tokens.new_token``) and only their
sha256 is stored, so a leaked database does not leak working tokens; a high-entropy random
token needs no slow password hash. Comparisons are constant-time, so timing reveals nothing.

A rotated node token (``POST /api/v1/nodes/{id}/token``) keeps working until the grace
period the admin chose ends, so a site can switch to its new token without a gap; after
that it is refused with a 401 saying it was rotated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.aggregator.audit import ADMIN, node_actor
from services.aggregator.db.models import Node, utcnow
from services.aggregator.settings import AggregatorSettings
from services.common.auth import Authenticator, StaticToken, person_actor
from services.common.db import Database
from services.common.identity import Person
from services.common.pki import common_name
from services.common.problems import Forbidden, Unauthenticated, Unavailable
from services.common.tokens import hash_token, tokens_equal

LAST_SEEN_RESOLUTION = timedelta(seconds=10)
"""``last_seen`` is refreshed at most this often, so polling nodes do not write on every call."""


class Role(StrEnum):
    admin = "admin"
    node = "node"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (the static token or a person), or one node."""

    role: Role
    node_id: int | None = None
    node_name: str | None = None
    person: Person | None = None

    @property
    def actor(self) -> str:
        """The audit trail's name for the caller: ``admin``, ``person:<sub> (<name>)`` for a
        person signed in through the IdP, ``node:<name>`` for a node."""
        if self.person is not None:
            return person_actor(self.person)
        return ADMIN if self.role is Role.admin else node_actor(self.node_name or "?")


def hub_authenticator(settings: AggregatorSettings) -> Authenticator:
    """The static admin token (read live from its setting) and, with single sign-on, the
    IdP whose people holding the mapped ``admin`` role administer the federation."""
    admin = StaticToken(Role.admin, settings.live_secret("admin_token"), lambda _: ADMIN)
    return Authenticator.from_settings(settings, admin)


def _find_node(session: Session, token: str) -> Node:
    """The node holding ``token`` as its current token, or as the previous one within the
    grace period of a rotation; :class:`Unauthenticated` otherwise."""
    digest = hash_token(token)
    node = session.scalars(select(Node).where(Node.token_hash == digest)).first()
    if node is not None and tokens_equal(node.token_hash, digest):
        return node
    node = session.scalars(select(Node).where(Node.previous_token_hash == digest)).first()
    if node is None or not tokens_equal(node.previous_token_hash or "", digest):
        raise Unauthenticated("invalid token")
    expires = node.previous_token_expires_at
    if expires is None or utcnow() >= expires:
        raise Unauthenticated(
            f"the token of node {node.name!r} was rotated; use its new token",
            code="token_rotated",
        )
    return node


def check_node_certificate(node_name: str, client_cert: str | None) -> None:
    """Under mutual TLS, a node token counts only with that node's certificate.

    The TLS layer has already checked that the certificate chains to the federation CA
    (``FEDMEDCLIP_AGG_CLIENT_CA``); here its common name must be the node's registered
    name, so a stolen token is useless without the node's private key, and a node cannot
    speak for another. Binding by name, not by fingerprint, lets certificates be renewed
    (``fedmedclip pki issue-node``) without touching the hub.
    """
    if client_cert is None:
        raise Unauthenticated(
            f"node {node_name!r} must present its client certificate (mutual TLS)",
            code="client_certificate_required",
        )
    presented = common_name(client_cert)
    if presented != node_name:
        raise Forbidden(
            f"the token of node {node_name!r} was presented with the certificate of {presented!r}",
            code="certificate_mismatch",
        )


def authenticate(
    db: Database,
    token: str,
    auth: Authenticator,
    allowed: frozenset[Role],
    *,
    require_certificate: bool = False,
    client_cert: str | None = None,
) -> Principal:
    """Resolve the caller of ``token`` and check its role.

    The admin is the static admin token or a person whose IdP roles map to ``admin``;
    any other token is looked up among the nodes'. 401 for an unknown, revoked or rotated
    token or a bad JWT; 403 for a valid caller of a role the route does not accept; 503
    for an admin-only route while neither an admin token nor single sign-on is set. With
    ``require_certificate`` (mutual TLS) a node must also present its own certificate.
    Takes the ``Database``, not the request's session: a node's ``last_seen`` is written
    in a short transaction of its own, committed before the route runs, so no lock is held
    while a request body uploads.
    """
    caller = auth.identify(token)
    if caller is not None:
        caller.require({Role.admin})  # a person without the admin role: 403 naming it
        principal = Principal(Role.admin, person=caller.person)
    elif allowed == {Role.admin} and auth.verifier is None and not any(auth.static_tokens()):
        raise Unavailable(
            "admin token not configured (set FEDMEDCLIP_AGG_ADMIN_TOKEN)", code="no_admin_token"
        )
    else:
        with db.write() as session:
            node = _find_node(session, token)
            if node.revoked_at is not None:
                raise Unauthenticated(f"the token of node {node.name!r} has been revoked")
            now = utcnow()
            if node.last_seen is None or now - node.last_seen >= LAST_SEEN_RESOLUTION:
                node.last_seen = now
            principal = Principal(Role.node, node.id, node.name)
        if require_certificate:
            check_node_certificate(node.name, client_cert)
    if principal.role not in allowed:
        needed = "the admin token" if Role.admin in allowed else "a node token"
        raise Forbidden(f"this route needs {needed}")
    return principal
