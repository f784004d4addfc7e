"""Clinician/admin tokens: roles, and callers named by a hash."""

from __future__ import annotations

from services.inference_api.auth import Role, TokenRegistry


def test_tokens_map_to_roles_and_callers_are_named_by_a_hash():
    registry = TokenRegistry(["alice-secret", "bob-secret"], admin_token="ops-secret")
    alice = registry.identify("alice-secret")
    assert alice is not None and alice.role is Role.clinician
    assert "alice" not in alice.id and alice.id.startswith("tok-")
    assert registry.identify("bob-secret").id != alice.id
    assert registry.identify("ops-secret").role is Role.admin
    assert registry.identify("alice-secret ") is None
    assert registry.identify("") is None


def test_no_admin_token_means_no_admin_role():
    registry = TokenRegistry(["alice-secret"])
    assert registry.identify("") is None
    assert {registry.identify("alice-secret").role} == {Role.clinician}
