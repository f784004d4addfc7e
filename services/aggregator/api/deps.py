"""Typed dependencies shared by the routers: context, per-request session, callers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.aggregator.auth import Principal, Role, authenticate
from services.aggregator.context import AppContext

_bearer = HTTPBearer(auto_error=False, description="Admin token or a node token.")


def get_context(request: Request) -> AppContext:
    return request.app.state.context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """One session per request: committed when the route returns, rolled back if it raises.

    Used with ``scope="function"`` so the commit happens before the response is sent: a
    2xx means the change is durable.
    """
    with context.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _caller(*roles: Role):
    allowed = frozenset(roles)

    def dependency(
        request: Request,
        context: ContextDep,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Principal:
        return authenticate(
            context.db.sessions,
            request.headers.get("authorization"),
            context.settings.admin_token_value(),
            allowed,
        )

    return dependency


AdminDep = Annotated[Principal, Depends(_caller(Role.admin))]
NodeDep = Annotated[Principal, Depends(_caller(Role.node))]
CallerDep = Annotated[Principal, Depends(_caller(Role.admin, Role.node))]
