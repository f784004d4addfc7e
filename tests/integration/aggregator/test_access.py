"""Tokens and roles, node registry, promotion and rollback, audit filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.hub import ADMIN, Hub, bearer, encoded, running_hub

pytestmark = pytest.mark.integration


def test_missing_or_bad_token_is_401_and_wrong_role_is_403(hub: Hub) -> None:
    node = hub.add_node("alpha")
    assert hub.client.get("/api/v1/task").status_code == 401
    assert hub.client.get("/api/v1/task", headers={"Authorization": "Basic abc"}).status_code == 401
    bad = hub.client.get("/api/v1/task", headers=bearer("not-a-token"))
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"] == "Bearer"
    assert hub.client.get("/api/v1/task", headers=bearer(node)).status_code == 200
    as_node = hub.client.post("/api/v1/rounds", json={}, headers=bearer(node))
    assert as_node.status_code == 403 and "admin token" in as_node.json()["detail"]
    as_admin = hub.client.get("/api/v1/nodes/me", headers=ADMIN)
    assert as_admin.status_code == 403 and "node token" in as_admin.json()["detail"]
    round_id = hub.open_round()["id"]
    admin_upload = hub.post_update(round_id, "test-admin-token", encoded(1))
    assert admin_upload.status_code == 403


def test_revoked_token_is_refused(hub: Hub) -> None:
    token = hub.add_node("alpha")
    me = hub.client.get("/api/v1/nodes/me", headers=bearer(token)).json()
    assert me["name"] == "alpha"
    revoked = hub.client.delete(f"/api/v1/nodes/{me['id']}", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = hub.client.get("/api/v1/nodes/me", headers=bearer(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    round_id = hub.open_round()["id"]
    assert hub.post_update(round_id, token, encoded(1)).status_code == 401
    assert hub.client.delete("/api/v1/nodes/999", headers=ADMIN).status_code == 404


def test_nodes_listing_shows_last_seen_and_never_tokens(hub: Hub) -> None:
    token = hub.add_node("alpha")
    hub.add_node("beta")
    duplicate = hub.client.post("/api/v1/nodes", json={"name": "alpha"}, headers=ADMIN)
    assert duplicate.status_code == 409
    invalid = hub.client.post("/api/v1/nodes", json={"name": "no spaces"}, headers=ADMIN)
    assert invalid.status_code == 422 and "body.name" in invalid.json()["detail"]
    hub.client.get("/api/v1/nodes/me", headers=bearer(token))
    listed = {n["name"]: n for n in hub.client.get("/api/v1/nodes", headers=ADMIN).json()}
    assert listed["alpha"]["last_seen"] is not None and listed["beta"]["last_seen"] is None
    assert all("token" not in n and "token_hash" not in n for n in listed.values())


def test_admin_routes_answer_503_without_an_admin_token(settings) -> None:
    with running_hub(settings.model_copy(update={"admin_token": None})) as hub:
        response = hub.client.put("/api/v1/task", json={}, headers=ADMIN)
        assert response.status_code == 503
        assert response.json()["detail"].startswith("admin token not configured")
        assert hub.client.get("/health").status_code == 200


def test_promote_and_rollback_move_production(hub: Hub) -> None:
    assert hub.client.get("/api/v1/models/production", headers=ADMIN).json()["version"] == 0
    token = hub.add_node("alpha")
    for seed in (1, 2):
        round_id = hub.open_round(base_version="latest")["id"]
        assert (
            hub.post_update(
                round_id, token, encoded(seed, base_version=seed - 1), key=str(seed)
            ).status_code
            == 201
        )
        assert hub.close(round_id).json()["result_version"] == seed

    def production() -> int:
        return hub.client.get("/api/v1/models/production", headers=bearer(token)).json()["version"]

    for version in (1, 2):
        promoted = hub.client.post(f"/api/v1/models/{version}/promote", headers=ADMIN)
        assert promoted.status_code == 200 and promoted.json()["is_production"]
    assert production() == 2
    assert hub.client.post("/api/v1/models/rollback", headers=ADMIN).json()["version"] == 1
    assert production() == 1
    assert hub.client.post("/api/v1/models/rollback", headers=ADMIN).json()["version"] == 0
    assert hub.client.post("/api/v1/models/rollback", headers=ADMIN).status_code == 409
    assert hub.client.post("/api/v1/models/7/promote", headers=ADMIN).status_code == 404
    listed = hub.client.get("/api/v1/models", headers=ADMIN).json()
    assert [(m["version"], m["is_production"]) for m in listed] == [
        (0, True),
        (1, False),
        (2, False),
    ]
    actions = [e["action"] for e in hub.audit(action="model.rollback")]
    assert actions == ["model.rollback", "model.rollback"]


def test_audit_filters(hub: Hub) -> None:
    hub.add_node("alpha")
    hub.open_round()
    everything = hub.audit()
    assert [e["action"] for e in everything][:3] == ["round.open", "node.create", "task.set"]
    assert {e["actor"] for e in everything} == {"admin"}
    assert [e["action"] for e in hub.audit(action="node.create")] == ["node.create"]
    assert len(hub.audit(limit=1)) == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert hub.audit(since=future) == []
    naive_past = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert len(hub.audit(since=naive_past)) == len(everything)
    bad = hub.client.get("/api/v1/audit", params={"since": "yesterday"}, headers=ADMIN)
    assert bad.status_code == 422 and "since" in bad.json()["detail"]


def test_malformed_json_bodies_are_422_with_a_message(hub: Hub) -> None:
    broken = hub.client.post(
        "/api/v1/rounds", content=b"{oops", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and "body: invalid JSON" in broken.json()["detail"]
    wrong_type = hub.client.post("/api/v1/rounds", json={"min_clients": "three"}, headers=ADMIN)
    assert wrong_type.status_code == 422 and "body.min_clients" in wrong_type.json()["detail"]
    unknown = hub.client.post("/api/v1/rounds", json={"colour": "red"}, headers=ADMIN)
    assert unknown.status_code == 422 and "colour" in unknown.json()["detail"]
    bad_task = hub.client.put("/api/v1/task", json={"class_names": ["a", "a"]}, headers=ADMIN)
    assert bad_task.status_code == 422 and "unique" in bad_task.json()["detail"]
    assert hub.client.get("/api/v1/models/abc", headers=ADMIN).status_code == 422
    huge = {"class_names": [f"class {i} " + "x" * 90 for i in range(12_000)]}
    too_big = hub.client.put("/api/v1/task", json=huge, headers=ADMIN)
    assert too_big.status_code == 413 and "limit of 1048576 bytes" in too_big.json()["detail"]
    streamed = hub.client.put(
        "/api/v1/task", content=iter([b"{" + b" " * 65536] * 20), headers=ADMIN
    )
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]
    assert hub.client.get("/api/v1/rounds", headers=ADMIN).json() == []


def test_health_ready_and_request_ids(hub: Hub) -> None:
    assert hub.client.get("/health").json() == {"status": "ok"}
    ready = hub.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["schema_revision"]
    echoed = hub.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = hub.client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["X-Request-ID"]) == 32


def test_task_class_names_are_stored_in_nfc_and_control_characters_are_a_422(hub: Hub) -> None:
    task = {"class_names": ["cafe\u0301", "nevus"], "backbone": "ViT-S-32"}
    response = hub.client.put("/api/v1/task", json=task, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert hub.client.get("/api/v1/task", headers=ADMIN).json()["class_names"] == [
        "caf\u00e9",
        "nevus",
    ]
    for names in (["caf\u00e9", "cafe\u0301"], ["a\u0000b", "nevus"], ["a/b", "nevus"]):
        refused = hub.client.put("/api/v1/task", json={"class_names": names}, headers=ADMIN)
        assert refused.status_code == 422, (names, refused.text)
        assert "class_names" in refused.json()["detail"]
