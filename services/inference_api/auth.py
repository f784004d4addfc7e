"""Who may use the inference API: clinicians predict, an optional admin operates the service.

Static tokens (``CLINICIAN_TOKENS``, ``ADMIN_TOKEN``) are read live from their settings, so
a rotated secret file takes effect without a restart, and compared in constant time against
every known token (:class:`services.common.auth.Authenticator`). A static caller appears in
logs and the audit trail as a short hash of its token. With single sign-on, a clinician or
admin may instead present a JWT from the hospital's identity provider; the audit trail
then names the person (``person:<sub> (<name>)``).
"""

from __future__ import annotations

from enum import StrEnum

from services.common.auth import Authenticator, StaticToken
from services.common.tokens import caller_id
from services.inference_api.settings import InferenceSettings


class Role(StrEnum):
    clinician = "clinician"
    admin = "admin"


def inference_authenticator(settings: InferenceSettings) -> Authenticator:
    """Clinician and admin tokens from the settings (live) and the IdP, if configured."""
    return Authenticator.from_settings(
        settings,
        StaticToken(Role.clinician, settings.live_secret("clinician_tokens"), caller_id),
        StaticToken(Role.admin, settings.live_secret("admin_token"), caller_id),
    )
