"""Typed dependencies of the node API routers: the node context and the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.tokens import BearerToken
from services.hospital_node.context import ADMIN, NodeContext


def get_context(request: Request) -> NodeContext:
    return request.app.state.context


Context = Annotated[NodeContext, Depends(get_context)]


def require_admin(ctx: Context, token: BearerToken) -> None:
    """Only the site admin may use the node API (health routes stay open): the static
    admin token, or a person whose IdP roles map to ``admin``."""
    ctx.auth.require(token, {ADMIN}, unknown="invalid token for the node API")


AdminOnly = [Depends(require_admin)]
