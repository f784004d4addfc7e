"""The hub's binding of node tokens to node certificates under mutual TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.aggregator.auth import check_node_certificate
from services.common.pki import init_ca, issue_node
from services.common.problems import Forbidden, Unauthenticated


def test_a_node_token_counts_only_with_that_nodes_certificate(tmp_path: Path) -> None:
    init_ca(tmp_path, "ca")
    own = issue_node(tmp_path, "site-a").cert.read_text()
    other = issue_node(tmp_path, "site-b").cert.read_text()
    check_node_certificate("site-a", own)  # accepted: no exception
    with pytest.raises(Forbidden, match="certificate of 'site-b'") as mismatch:
        check_node_certificate("site-a", other)
    assert mismatch.value.code == "certificate_mismatch"
    with pytest.raises(Unauthenticated) as missing:
        check_node_certificate("site-a", None)
    assert missing.value.code == "client_certificate_required"
    with pytest.raises(Forbidden):
        check_node_certificate("site-a", "not a certificate")
