"""Typed dependencies of the node API routers: the node context and the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.problems import Unauthenticated
from services.common.tokens import BearerToken, tokens_equal
from services.hospital_node.context import NodeContext


def get_context(request: Request) -> NodeContext:
    return request.app.state.node


Context = Annotated[NodeContext, Depends(get_context)]


def require_admin(ctx: Context, token: BearerToken) -> None:
    """Only the site admin may use the node API (health routes stay open)."""
    if not tokens_equal(token, ctx.settings.admin_token.get_secret_value()):
        raise Unauthenticated("invalid token for the node API")


AdminOnly = [Depends(require_admin)]
