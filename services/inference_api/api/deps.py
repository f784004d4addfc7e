"""Typed dependencies shared by the routers: context, service, settings, PACS, callers.

The names are the other services' (``ContextDep``, ``AdminDep``), so a route reads the same
in each; ``ServiceDep``, ``SettingsDep`` and ``PacsDep`` are parts of the context that most
routes need on their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.auth import Caller
from services.common.tokens import BearerToken
from services.inference_api.auth import Role
from services.inference_api.context import InferenceContext
from services.inference_api.dicomweb import PacsClient
from services.inference_api.service import InferenceService
from services.inference_api.settings import InferenceSettings


def get_context(request: Request) -> InferenceContext:
    return request.app.state.context


ContextDep = Annotated[InferenceContext, Depends(get_context)]


def get_service(context: ContextDep) -> InferenceService:
    return context.service


def get_settings(context: ContextDep) -> InferenceSettings:
    return context.settings


def get_pacs(context: ContextDep) -> PacsClient:
    """The site's PACS; the routes that take it are mounted only when one is configured."""
    assert context.pacs is not None, "a DICOMweb route is mounted without a PACS"
    return context.pacs


ServiceDep = Annotated[InferenceService, Depends(get_service)]
SettingsDep = Annotated[InferenceSettings, Depends(get_settings)]
PacsDep = Annotated[PacsClient, Depends(get_pacs)]


def _caller(*roles: Role):
    """A dependency that admits only callers with one of ``roles`` (else 403).

    A static token grants one role; a person's roles come from the identity provider.
    """

    def dependency(context: ContextDep, token: BearerToken) -> Caller:
        return context.auth.require(token, roles, unknown="unknown bearer token")

    return dependency


ClinicianDep = Annotated[Caller, Depends(_caller(Role.clinician))]
ReaderDep = Annotated[Caller, Depends(_caller(Role.clinician, Role.admin))]
AdminDep = Annotated[Caller, Depends(_caller(Role.admin))]
