"""Typed dependencies of the node API routers: context, per-request session, the admin check.

The names are the hub's (``services.aggregator.api.deps``), so a route reads the same in
either service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.common.tokens import BearerToken
from services.hospital_node.context import ADMIN, NodeContext


def get_context(request: Request) -> NodeContext:
    return request.app.state.context


ContextDep = Annotated[NodeContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """One writing scope per request: committed before the response is sent (hence
    ``scope="function"``), rolled back if the route raises."""
    with context.db.write() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def require_admin(ctx: ContextDep, token: BearerToken) -> None:
    """Only the site admin may use the node API (health routes stay open): the static
    admin token, or a person whose IdP roles map to ``admin``."""
    ctx.auth.require(token, {ADMIN}, unknown="invalid token for the node API")


AdminOnly = [Depends(require_admin)]
