"""The hub's bearer header parsing."""

from __future__ import annotations

import pytest

from services.aggregator.auth import bearer_token
from services.common.problems import Unauthenticated


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_bearer_header_must_carry_a_token(header) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("bearer abc.DEF-1") == "abc.DEF-1"
