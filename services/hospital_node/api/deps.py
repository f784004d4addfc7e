"""Typed dependencies of the node API routers: the node context and the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from services.common.tokens import BearerError, bearer_token, tokens_equal
from services.hospital_node.context import NodeContext


def get_context(request: Request) -> NodeContext:
    return request.app.state.node


Context = Annotated[NodeContext, Depends(get_context)]


def require_admin(
    ctx: Context, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    """Only the site admin may use the node API (health routes stay open)."""
    try:
        token = bearer_token(authorization)
    except BearerError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    if not tokens_equal(token, ctx.settings.admin_token.get_secret_value()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid token for the node API",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminOnly = [Depends(require_admin)]
