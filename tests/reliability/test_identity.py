"""Credentials end to end, on real servers over loopback: people signed in with JWTs from a
real (test) identity provider, node token rotation, and secret files rotated the way
Kubernetes rotates a mounted Secret, without restarting anything.

Every service is checked the same way: a person's JWT opens its admin (or clinician)
routes and the audit names the person; a JWT with a bad signature, for another audience
or issuer, expired, or signed with a key the IdP does not publish gets 401; a key the IdP
rolled over is picked up; a person without the route's role gets 403.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.aggregator.app import create_app as create_hub
from services.aggregator.settings import AggregatorSettings
from services.common.hub_client import HubRejected
from services.hospital_node.app import create_app as create_node
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.settings import NodeSettings
from services.inference_api.settings import InferenceSettings
from tests.integration.inference.helpers import serve
from tests.support.hub import TASK, bearer
from tests.support.idp import AUDIENCE, ISSUER, TestIdp
from tests.support.processes import ThreadedServer, wait_until

pytestmark = pytest.mark.integration

ROLE_MAP = "fl-admin=admin,radiologist=clinician"


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdp]:
    with TestIdp() as provider:
        yield provider


def oidc(idp: TestIdp) -> dict[str, Any]:
    """Single sign-on settings naming the test IdP (as a service reads them)."""
    return {
        "oidc_issuer": ISSUER,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": idp.jwks_url,
        "oidc_role_claim": "realm_access.roles",
        "oidc_role_map": ROLE_MAP,
        # Every JWKS fetch starts the refetch cooldown: without this, a key rolled over
        # within 10 s of the first fetch would wait for the cooldown to end.
        "oidc_jwks_refresh_seconds": 0,
    }


class MountedSecret:
    """A secret file as Kubernetes mounts it: ``<dir>/<key>`` -> ``..data/<key>``, where
    ``..data`` is a symlink swapped atomically to a fresh directory on every update."""

    def __init__(self, root: Path, key: str, value: str) -> None:
        self.root, self.key, self.updates = root, key, 0
        root.mkdir(parents=True)
        self.write(value)
        (root / key).symlink_to(Path("..data") / key)

    @property
    def path(self) -> Path:
        return self.root / self.key

    def write(self, value: str) -> None:
        self.updates += 1
        version = self.root / f"..v{self.updates}"
        version.mkdir()
        (version / self.key).write_text(value + "\n")
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")
        if self.updates > 1:
            shutil.rmtree(self.root / f"..v{self.updates - 1}")


def refused_jwts(idp: TestIdp, roles: list[str]) -> dict[str, str]:
    """JWTs that must all get 401, each wrong in one way (else valid, with ``roles``)."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "bad signature": idp.token(roles=roles, key=stranger),
        "wrong audience": idp.token(roles=roles, audience="another-app"),
        "wrong issuer": idp.token(roles=roles, issuer="https://evil.test/realms/x"),
        "expired": idp.token(roles=roles, expires_in=-300),
        "unknown key id": idp.token(roles=roles, kid="no-such-key"),
    }


def check_sign_in(
    idp: TestIdp,
    call: Callable[[str], httpx.Response],
    roles: list[str],
    lacking: list[str],
) -> None:
    """``call(token)`` hits a route needing one of ``roles``: a person holding them gets in,
    every bad JWT gets 401, a rolled-over IdP key is picked up, ``lacking`` roles get 403."""
    before = call(idp.token(roles=roles))
    assert before.is_success, before.text
    idp.rotate()  # the IdP rolls its key: tokens now name a key id the service never saw
    after = call(idp.token(roles=roles))
    assert after.is_success, after.text
    for case, token in refused_jwts(idp, roles).items():
        refused = call(token)
        assert refused.status_code == 401, (case, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] in {"invalid_jwt", "jwt_expired"}, case
    forbidden = call(idp.token("mallory", roles=lacking, name="Mallory"))
    assert forbidden.status_code == 403, forbidden.text
    assert "mallory" in forbidden.json()["detail"]


@contextmanager
def env(**variables: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        yield


def until_status(call: Callable[[], httpx.Response], status: int) -> None:
    """Wait (a few seconds at most) until a rotated secret file is in effect."""
    wait_until(lambda: call().status_code == status, timeout=10, what=f"status {status}")


# --- hub ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory, idp: TestIdp) -> Iterator[tuple[httpx.Client, MountedSecret]]:
    root = tmp_path_factory.mktemp("hub")
    admin_file = MountedSecret(root / "secrets", "admin-token", "hub-admin-1")
    with env(FEDMEDCLIP_AGG_ADMIN_TOKEN_FILE=str(admin_file.path)):
        settings = AggregatorSettings(data_dir=root / "data", **oidc(idp))
    with (
        ThreadedServer(create_hub(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield http, admin_file


def test_hub_admins_sign_in_with_jwts_and_the_audit_names_them(hub, idp: TestIdp) -> None:
    http, _ = hub
    task = TASK.model_dump(mode="json")

    def set_task(token: str) -> httpx.Response:
        return http.put("/api/v1/task", json=task, headers=bearer(token))

    check_sign_in(idp, set_task, ["fl-admin"], lacking=["radiologist"])
    admin = bearer(idp.token("alice", roles=["fl-admin"]))
    audit = http.get("/api/v1/audit", params={"action": "task.set"}, headers=admin).json()
    assert audit[0]["actor"] == "person:alice (Alice Example)"
    # A person's JWT is an admin credential only: node routes refuse it.
    assert http.get("/api/v1/nodes/me", headers=admin).status_code == 403


def test_a_rotated_node_token_replaces_the_old_one(hub, idp: TestIdp) -> None:
    http, admin_file = hub
    admin = bearer(idp.token("alice", roles=["fl-admin"]))
    created = http.post("/api/v1/nodes", json={"name": "alpha"}, headers=admin).json()
    me = "/api/v1/nodes/me"

    rotated = http.post(f"/api/v1/nodes/{created['id']}/token", json={}, headers=admin)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert {new["id"], new["name"]} == {created["id"], "alpha"}
    assert http.get(me, headers=bearer(new["token"])).json()["name"] == "alpha"
    old = http.get(me, headers=bearer(created["token"]))
    assert old.status_code == 401 and old.json()["code"] == "token_rotated"

    # With a grace period both work until it ends; the static admin token may rotate too.
    static = bearer("hub-admin-1")
    graced = http.post(
        f"/api/v1/nodes/{created['id']}/token", json={"grace_seconds": 3600}, headers=static
    ).json()
    for token in (new["token"], graced["token"]):
        assert http.get(me, headers=bearer(token)).status_code == 200
    events = http.get("/api/v1/audit", params={"action": "node.token_rotated"}, headers=admin)
    assert [
        (e["actor"], e["details"]["grace_seconds"])
        for e in events.json()
        if e["target"] == f"node:{created['id']}"
    ] == [
        ("admin", 3600),
        ("person:alice (Alice Example)", 0),
    ]

    url = f"/api/v1/nodes/{created['id']}/token"
    assert http.post(url, json={"grace_seconds": 86401}, headers=admin).status_code == 422
    assert http.post("/api/v1/nodes/999/token", headers=admin).status_code == 404
    http.delete(f"/api/v1/nodes/{created['id']}", headers=admin)
    assert http.post(url, headers=admin).json()["code"] == "node_revoked"
    for token in (new["token"], graced["token"]):  # revocation ends the grace period too
        assert http.get(me, headers=bearer(token)).status_code == 401


def test_the_hub_admin_token_file_is_reread_without_a_restart(hub) -> None:
    http, admin_file = hub

    def nodes(token: str) -> Callable[[], httpx.Response]:
        return lambda: http.get("/api/v1/nodes", headers=bearer(token))

    assert nodes("hub-admin-1")().status_code == 200
    admin_file.write("hub-admin-2")
    until_status(nodes("hub-admin-2"), 200)
    assert nodes("hub-admin-1")().status_code == 401
    admin_file.write("hub-admin-1")  # leave the module's hub as it was
    until_status(nodes("hub-admin-1"), 200)


# --- hospital node -------------------------------------------------------------------------


@pytest.mark.slow
def test_node_admins_sign_in_and_the_node_token_file_rotates(tmp_path, hub, idp) -> None:
    http, _ = hub
    admin = bearer(idp.token("alice", roles=["fl-admin"]))
    created = http.post("/api/v1/nodes", json={"name": "beta"}, headers=admin).json()
    admin_file = MountedSecret(tmp_path / "admin", "token", "site-admin-1")
    node_file = MountedSecret(tmp_path / "node", "token", created["token"])
    (tmp_path / "data").mkdir()
    with env(
        FEDMEDCLIP_NODE_ADMIN_TOKEN_FILE=str(admin_file.path),
        FEDMEDCLIP_NODE_NODE_TOKEN_FILE=str(node_file.path),
    ):
        settings = NodeSettings(
            aggregator_url=str(http.base_url),
            data_roots=[tmp_path / "data"],
            data_dir=tmp_path / "node",
            model_store_dir=tmp_path / "node" / "store",
            device="cpu",
            hub_retries=0,
            **oidc(idp),
        )
    with (
        ThreadedServer(create_node(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as node,
        connect_hub(settings) as to_hub,  # one long-lived client, as a training job holds
    ):

        def jobs(token: str) -> httpx.Response:
            return node.get("/api/v1/jobs", headers=bearer(token))

        check_sign_in(idp, jobs, ["fl-admin"], lacking=["radiologist"])

        assert jobs("site-admin-1").status_code == 200
        admin_file.write("site-admin-2")
        until_status(lambda: jobs("site-admin-2"), 200)
        assert jobs("site-admin-1").status_code == 401

        # The hub rotates the node's token; the site puts the new one in its secret file
        # and the same client carries on with it.
        assert to_hub.get_task().class_names == TASK.class_names
        rotate = f"/api/v1/nodes/{created['id']}/token"
        new = http.post(rotate, headers=bearer("hub-admin-1")).json()["token"]
        with pytest.raises(HubRejected, match="rotated") as refused:
            to_hub.get_task()
        assert refused.value.status_code == 401
        node_file.write(new)
        wait_until(lambda: _hub_answers(to_hub), timeout=10, what="new node token in use")


def _hub_answers(client: Any) -> bool:
    try:
        client.get_task()
    except HubRejected:
        return False
    return True


# --- inference API -------------------------------------------------------------------------


@pytest.mark.slow
def test_clinicians_predict_with_jwts_and_the_audit_names_them(
    tmp_path, trained_store: Path, site, idp: TestIdp
) -> None:
    store = shutil.copytree(trained_store, tmp_path / "store")
    tokens_file = MountedSecret(tmp_path / "clinicians", "tokens", "ward-1,ward-2")
    with env(FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS_FILE=str(tokens_file.path)):
        settings = InferenceSettings(
            model_store_dir=store,
            admin_token="inference-admin",
            audit_path=tmp_path / "audit" / "audit.jsonl",
            device="cpu",
            aggregator_url="",
            **oidc(idp),
        )
    png = site.image_paths[0].read_bytes()
    with serve(settings) as server, httpx.Client(base_url=server.url, timeout=120) as http:

        def predict(token: str) -> httpx.Response:
            return http.post("/predict", files={"file": ("x.png", png)}, headers=bearer(token))

        def reload(token: str) -> httpx.Response:
            return http.post("/model/reload", headers=bearer(token))

        # Clinicians predict; an IdP admin operates the service but does not predict.
        check_sign_in(idp, predict, ["radiologist"], lacking=["fl-admin"])
        check_sign_in(idp, reload, ["fl-admin"], lacking=["radiologist"])
        carol = idp.token("carol", roles=["radiologist"], name="Carol Example")
        assert predict(carol).status_code == 200
        assert reload(carol).status_code == 403

        assert predict("ward-1").status_code == 200
        tokens_file.write("ward-2,ward-3")
        until_status(lambda: predict("ward-3"), 200)
        assert predict("ward-1").status_code == 401

    lines = [json.loads(line) for line in settings.audit_path.read_text().splitlines()]
    callers = [line["caller"] for line in lines]
    assert callers[-3] == "person:carol (Carol Example)"
    assert "person:alice (Alice Example)" in callers  # the sign-in checks' predictions
    assert callers[-2].startswith("tok-") and callers[-1].startswith("tok-")
    assert callers[-2] != callers[-1]  # ward-1 and ward-3: one hash per token
    assert not any("ward" in caller for caller in callers)


def test_a_jwt_without_single_sign_on_is_an_unknown_token(tmp_path, idp: TestIdp) -> None:
    settings = AggregatorSettings(data_dir=tmp_path, admin_token="hub-admin")
    with (
        ThreadedServer(create_hub(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        token = idp.token(roles=["fl-admin"])
        refused = http.get("/api/v1/nodes", headers=bearer(token))
        assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
