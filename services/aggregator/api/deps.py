"""Typed dependencies shared by the routers: context, per-request session, callers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.aggregator.auth import Principal, Role, authenticate
from services.aggregator.context import AppContext
from services.common.serving import client_cert_pem
from services.common.tokens import BearerToken


def get_context(request: Request) -> AppContext:
    return request.app.state.context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """One session per request: committed when the route returns, rolled back if it raises.

    Used with ``scope="function"`` so the commit happens before the response is sent: a
    2xx means the change is durable.
    """
    with context.db.write() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _caller(*roles: Role):
    allowed = frozenset(roles)

    def dependency(request: Request, context: ContextDep, token: BearerToken) -> Principal:
        settings = context.settings
        return authenticate(
            context.db,
            token,
            context.auth,
            allowed,
            require_certificate=settings.client_ca is not None,
            client_cert=client_cert_pem(request.scope),
        )

    return dependency


AdminDep = Annotated[Principal, Depends(_caller(Role.admin))]
NodeDep = Annotated[Principal, Depends(_caller(Role.node))]
CallerDep = Annotated[Principal, Depends(_caller(Role.admin, Role.node))]
