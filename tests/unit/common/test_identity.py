"""Bearer JWTs from a real (test) identity provider: accepted, refused, keys rotated."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.identity import JwtVerifier, OidcConfig, looks_like_jwt, map_roles
from services.common.problems import Unauthenticated
from tests.support.idp import AUDIENCE, ISSUER, TestIdp


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdp]:
    with TestIdp() as provider:
        yield provider


def _verifier(idp: TestIdp, cooldown: float = 0.0) -> JwtVerifier:
    return JwtVerifier(
        OidcConfig(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_url=idp.jwks_url,
            role_claim="realm_access.roles",
            role_map={"radiologist": "clinician", "fl-admin": "admin"},
            jwks_refresh_cooldown_seconds=cooldown,
        )
    )


def test_a_valid_token_names_the_person_and_maps_roles(idp: TestIdp) -> None:
    person = _verifier(idp).verify(idp.token("alice", roles=["radiologist", "other"]))
    assert person.subject == "alice"
    assert person.name == "Alice Example"
    assert person.roles == {"clinician"}
    assert person.label == "alice (Alice Example)"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda idp: idp.token(expires_in=-120), "jwt_expired"),
        (lambda idp: idp.token(audience="another-app"), "invalid_jwt"),
        (lambda idp: idp.token(issuer="https://evil.test"), "invalid_jwt"),
        (
            lambda idp: idp.token(
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ),
            "invalid_jwt",
        ),
        (lambda idp: idp.token(kid="no-such-key"), "invalid_jwt"),
        (
            lambda idp: jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE}, "k" * 32),
            "invalid_jwt",
        ),
        (lambda idp: "a.b.c", "invalid_jwt"),
    ],
    ids=["expired", "audience", "issuer", "signature", "unknown kid", "hs256", "garbage"],
)
def test_bad_tokens_are_refused_with_a_reason(idp: TestIdp, make, code: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        _verifier(idp).verify(make(idp))
    assert refused.value.code == code
    assert refused.value.status == 401


def test_a_rotated_signing_key_is_fetched_on_first_sight(idp: TestIdp) -> None:
    verifier = _verifier(idp)
    assert verifier.verify(idp.token("bob")).subject == "bob"
    fetched = idp.fetches
    assert verifier.verify(idp.token("bob")).subject == "bob"
    assert idp.fetches == fetched  # cached
    idp.rotate()
    assert verifier.verify(idp.token("carol")).subject == "carol"  # new kid -> refetch
    assert idp.fetches == fetched + 1


def test_unknown_key_ids_cannot_make_us_hammer_the_idp(idp: TestIdp) -> None:
    verifier = _verifier(idp, cooldown=60)
    verifier.verify(idp.token("dave"))
    fetched = idp.fetches
    for _ in range(20):
        with pytest.raises(Unauthenticated):
            verifier.verify(idp.token(kid="made-up"))
    assert idp.fetches == fetched


def test_role_mapping_and_jwt_shape() -> None:
    table = {"a": "admin", "c": "clinician"}
    assert map_roles(["a", "x"], table) == {"admin"}
    assert map_roles("c", table) == {"clinician"}
    assert map_roles({"a": 1}, table) == frozenset()
    assert looks_like_jwt("x.y.z") and not looks_like_jwt("static-token_abc")
