"""``/api/v1/nodes``: hospital node registration, token rotation and revocation."""

from __future__ import annotations

from fastapi import APIRouter

from fedmedclip.ids import DbId
from fedmedclip.schemas import NodeCreate, NodeCreated, NodeIdentity, NodeInfo, NodeTokenRotate
from services.aggregator import nodes
from services.aggregator.api.deps import AdminDep, NodeDep, SessionDep

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


@router.post("", status_code=201, response_model=NodeCreated, summary="Register a node")
def create_node(body: NodeCreate, admin: AdminDep, session: SessionDep) -> NodeCreated:
    """The answer holds the node's token; it is shown only here and stored hashed."""
    return nodes.create_node(session, body.name, admin.actor)


@router.get("", response_model=list[NodeInfo], summary="All nodes, with last seen")
def list_nodes(_: AdminDep, session: SessionDep) -> list[NodeInfo]:
    return nodes.list_nodes(session)


@router.get("/me", response_model=NodeIdentity, summary="The calling node")
def me(node: NodeDep) -> NodeIdentity:
    assert node.node_id is not None and node.node_name is not None  # node role
    return NodeIdentity(id=node.node_id, name=node.node_name)


@router.post("/{node_id}/token", response_model=NodeCreated, summary="Give a node a new token")
def rotate_token(
    node_id: DbId,
    admin: AdminDep,
    session: SessionDep,
    body: NodeTokenRotate | None = None,
) -> NodeCreated:
    """The answer holds the new token (shown only here). The old one keeps working for
    ``grace_seconds`` (default 0), then is refused with a 401 saying it was rotated. 409
    for a revoked node."""
    grace = (body or NodeTokenRotate()).grace_seconds
    return nodes.rotate_token(session, node_id, grace, admin.actor)


@router.delete("/{node_id}", response_model=NodeInfo, summary="Revoke a node's token")
def revoke_node(node_id: DbId, admin: AdminDep, session: SessionDep) -> NodeInfo:
    return nodes.revoke_node(session, node_id, admin.actor)
