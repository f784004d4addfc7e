"""Typed dependencies of the routers: the service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.problems import Forbidden, Unauthenticated
from services.common.tokens import BearerToken
from services.inference_api.auth import Caller, Role, TokenRegistry
from services.inference_api.service import InferenceService
from services.inference_api.settings import InferenceSettings


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


def get_settings(request: Request) -> InferenceSettings:
    return request.app.state.settings


def _caller(request: Request, token: BearerToken) -> Caller:
    registry: TokenRegistry = request.app.state.tokens
    caller = registry.identify(token)
    if caller is None:
        raise Unauthenticated("unknown bearer token")
    return caller


def require(*roles: Role):
    """A dependency that admits only callers with one of ``roles`` (else 403)."""

    def dependency(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if caller.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise Forbidden(f"this route needs a {allowed} token, not a {caller.role} token")
        return caller

    return dependency


SettingsDep = Annotated[InferenceSettings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
ClinicianDep = Annotated[Caller, Depends(require(Role.clinician))]
ReaderDep = Annotated[Caller, Depends(require(Role.clinician, Role.admin))]
AdminDep = Annotated[Caller, Depends(require(Role.admin))]
