"""Hospital node registry: create (token shown once), list, rotate a token, revoke."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedmedclip.schemas import NodeCreated, NodeInfo
from services.aggregator import audit
from services.aggregator.db.models import Node, utcnow
from services.common.problems import Conflict, NotFound
from services.common.tokens import hash_token, new_token


def create_node(session: Session, name: str, actor: str) -> NodeCreated:
    if session.scalars(select(Node).where(Node.name == name)).first() is not None:
        raise Conflict(f"a node named {name!r} already exists")
    token = new_token()
    node = Node(name=name, token_hash=hash_token(token))
    session.add(node)
    session.flush()
    audit.record(session, actor, "node.create", f"node:{node.id}", name=name)
    return NodeCreated(id=node.id, name=node.name, token=token)


def list_nodes(session: Session) -> list[NodeInfo]:
    return [NodeInfo.model_validate(n) for n in session.scalars(select(Node).order_by(Node.id))]


def revoke_node(session: Session, node_id: int, actor: str) -> NodeInfo:
    """Revoke a node's token; revoking twice keeps the first revocation time."""
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"node {node_id} does not exist")
    if node.revoked_at is None:
        node.revoked_at = utcnow()
        audit.record(session, actor, "node.revoke", f"node:{node.id}", name=node.name)
    return NodeInfo.model_validate(node)


def rotate_token(session: Session, node_id: int, grace_seconds: int, actor: str) -> NodeCreated:
    """Give node ``node_id`` a new token (shown once); the old one works ``grace_seconds``
    longer, then is refused as rotated. Only the latest previous token is remembered, so
    rotating again ends the grace period of the one before. A revoked node stays revoked:
    409 (register it anew instead).
    """
    node = session.get(Node, node_id, with_for_update=True)
    if node is None:
        raise NotFound(f"node {node_id} does not exist")
    if node.revoked_at is not None:
        raise Conflict(
            f"node {node.name!r} is revoked; a revoked node gets no new token", code="node_revoked"
        )
    token = new_token()
    node.previous_token_hash = node.token_hash
    node.previous_token_expires_at = utcnow() + timedelta(seconds=grace_seconds)
    node.token_hash = hash_token(token)
    audit.record(
        session,
        actor,
        "node.token_rotated",
        f"node:{node.id}",
        name=node.name,
        grace_seconds=grace_seconds,
    )
    return NodeCreated(id=node.id, name=node.name, token=token)
