"""Clinician/admin tokens: roles, and callers named by a hash."""

from __future__ import annotations

from services.inference_api.auth import Role, inference_authenticator
from services.inference_api.settings import InferenceSettings


def test_tokens_map_to_roles_and_callers_are_named_by_a_hash():
    auth = inference_authenticator(
        InferenceSettings(clinician_tokens="alice-secret,bob-secret", admin_token="ops-secret")
    )
    alice = auth.identify("alice-secret")
    assert alice is not None and alice.roles == {Role.clinician}
    assert "alice" not in alice.actor and alice.actor.startswith("tok-")
    assert alice.person is None
    assert auth.identify("bob-secret").actor != alice.actor
    assert auth.identify("ops-secret").roles == {Role.admin}
    assert auth.identify("alice-secret ") is None
    assert auth.identify("") is None


def test_no_admin_token_means_no_admin_role():
    auth = inference_authenticator(InferenceSettings(clinician_tokens="alice-secret"))
    assert auth.identify("") is None
    assert auth.identify("alice-secret").roles == {Role.clinician}
