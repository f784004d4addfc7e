"""The hub's callers: who the audit trail names, node tokens across a rotation, and the
binding of node tokens to node certificates under mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.aggregator.auth import (
    Principal,
    Role,
    authenticate,
    check_node_certificate,
    hub_authenticator,
)
from services.aggregator.db.migrate import prepare_schema
from services.aggregator.nodes import create_node, revoke_node, rotate_token
from services.aggregator.settings import AggregatorSettings
from services.common.db import Database
from services.common.identity import Person
from services.common.pki import init_ca, issue_node
from services.common.problems import Conflict, Forbidden, NotFound, Unauthenticated, Unavailable

ANY = frozenset({Role.admin, Role.node})


@pytest.fixture
def db(tmp_path) -> Iterator[Database]:
    database = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    prepare_schema(database.engine, auto_migrate=False)
    yield database
    database.dispose()


def test_the_audit_trail_names_the_person_the_admin_token_or_the_node() -> None:
    alice = Person("alice", "Alice Example", frozenset({"admin"}))
    assert Principal(Role.admin, person=alice).actor == "person:alice (Alice Example)"
    assert Principal(Role.admin, person=Person("bob", None, frozenset())).actor == "person:bob"
    long = Person("x" * 200, "y" * 200, frozenset())
    assert len(Principal(Role.admin, person=long).actor) == 120  # fits the audit column
    assert Principal(Role.admin).actor == "admin"
    assert Principal(Role.node, 3, "alpha").actor == "node:alpha"


def test_a_rotated_token_works_through_its_grace_period_only(db: Database) -> None:
    auth = hub_authenticator(AggregatorSettings(admin_token="hub-admin"))
    with db.write() as session:
        node = create_node(session, "alpha", "admin")
    with db.write() as session:
        instant = rotate_token(session, node.id, 0, "admin")
    with db.write() as session:
        graced = rotate_token(session, node.id, 600, "admin")
    assert len({node.token, instant.token, graced.token}) == 3
    assert authenticate(db, graced.token, auth, ANY).node_name == "alpha"
    assert authenticate(db, instant.token, auth, ANY).node_id == node.id  # in grace
    with pytest.raises(Unauthenticated, match="invalid token"):
        authenticate(db, node.token, auth, ANY)  # two rotations back: forgotten
    with db.write() as session:
        rotate_token(session, node.id, 0, "admin")
    with pytest.raises(Unauthenticated, match="rotated") as refused:
        authenticate(db, graced.token, auth, ANY)
    assert refused.value.code == "token_rotated"


def test_only_a_live_node_can_rotate(db: Database) -> None:
    with db.write() as session:
        node = create_node(session, "alpha", "admin")
        revoke_node(session, node.id, "admin")
    with pytest.raises(Conflict, match="revoked"), db.write() as session:
        rotate_token(session, node.id, 0, "admin")
    with pytest.raises(NotFound), db.write() as session:
        rotate_token(session, 99, 0, "admin")


def test_admin_routes_need_an_admin_token_or_single_sign_on(db: Database) -> None:
    bare = hub_authenticator(AggregatorSettings())
    with pytest.raises(Unavailable):
        authenticate(db, "anything", bare, frozenset({Role.admin}))
    auth = hub_authenticator(AggregatorSettings(admin_token="hub-admin"))
    assert authenticate(db, "hub-admin", auth, ANY).role is Role.admin
    with pytest.raises(Forbidden, match="node token"):
        authenticate(db, "hub-admin", auth, frozenset({Role.node}))


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
