"""Bearer tokens: random, stored only as their sha256; header parsing; the shared dependency."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.problems import Unauthenticated, install_problem_handlers
from services.common.tokens import BearerToken, bearer_token, hash_token, new_token


def test_tokens_are_random_and_stored_only_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 40
    assert hash_token(first) != hash_token(second)
    assert len(hash_token(first)) == 64 and first not in hash_token(first)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_bearer_header_must_carry_a_token(header) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("bearer abc.DEF-1") == "abc.DEF-1"


def test_the_dependency_declares_the_scheme_and_answers_our_401() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/who")
    def who(token: BearerToken) -> dict[str, str]:
        return {"token": token}

    client = TestClient(app)
    assert client.get("/who", headers={"Authorization": "Bearer t0k"}).json() == {"token": "t0k"}
    for headers in ({}, {"Authorization": "Basic dXNlcg=="}):
        refused = client.get("/who", headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
        assert refused.headers["www-authenticate"] == "Bearer"
    schema = app.openapi()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>` with a token of this service.",
    }
    assert schema["paths"]["/who"]["get"]["security"] == [{"HTTPBearer": []}]
