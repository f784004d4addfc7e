"""Typed dependencies of the routers: the service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.auth import Authenticator, Caller
from services.common.tokens import BearerToken
from services.inference_api.auth import Role
from services.inference_api.service import InferenceService
from services.inference_api.settings import InferenceSettings


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


def get_settings(request: Request) -> InferenceSettings:
    return request.app.state.settings


def require(*roles: Role):
    """A dependency that admits only callers with one of ``roles`` (else 403).

    A static token grants one role; a person's roles come from the identity provider.
    """

    def dependency(request: Request, token: BearerToken) -> Caller:
        auth: Authenticator = request.app.state.auth
        return auth.require(token, roles, unknown="unknown bearer token")

    return dependency


SettingsDep = Annotated[InferenceSettings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
ClinicianDep = Annotated[Caller, Depends(require(Role.clinician))]
ReaderDep = Annotated[Caller, Depends(require(Role.clinician, Role.admin))]
AdminDep = Annotated[Caller, Depends(require(Role.admin))]
