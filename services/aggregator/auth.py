"""Bearer-token authentication for the admin and for hospital nodes.

Node tokens are random (``services.common.tokens.new_token``) and only their sha256 is
stored, so a leaked database does not leak working tokens; a high-entropy random token
needs no slow password hash. Comparisons are constant-time, so timing reveals nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.aggregator.audit import ADMIN, node_actor
from services.aggregator.db.models import Node, utcnow
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
    """Who is calling: the admin, or one node (with its id and name)."""

    role: Role
    node_id: int | None = None
    node_name: str | None = None

    @property
    def actor(self) -> str:
        return ADMIN if self.role is Role.admin else node_actor(self.node_name or "?")


def _find_node(session: Session, token: str) -> Node | None:
    digest = hash_token(token)
    node = session.scalars(select(Node).where(Node.token_hash == digest)).first()
    if node is None or not tokens_equal(node.token_hash, digest):
        return None
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
    sessions: sessionmaker[Session],
    token: str,
    admin_token: str | None,
    allowed: frozenset[Role],
    *,
    require_certificate: bool = False,
    client_cert: str | None = None,
) -> Principal:
    """Resolve the caller of ``token`` and check its role.

    401 for an unknown or revoked token; 403 for a valid token of a role the route does not
    accept; 503 for an admin-only route while no admin token is set. With
    ``require_certificate`` (mutual TLS) a node must also present its own certificate.
    Runs in its own short transaction so that no lock is held while a request body uploads.
    """
    if allowed == {Role.admin} and admin_token is None:
        raise Unavailable(
            "admin token not configured (set FEDMEDCLIP_AGG_ADMIN_TOKEN)", code="no_admin_token"
        )
    if admin_token is not None and tokens_equal(token, admin_token):
        principal = Principal(Role.admin)
    else:
        with sessions.begin() as session:
            node = _find_node(session, token)
            if node is None:
                raise Unauthenticated("invalid token")
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
