"""Update intake: idempotent replays, conflicts, and bad input that leaves nothing stored."""

from __future__ import annotations

import pytest

from fedmedclip.codec import encode_update
from tests.support.hub import ADMIN, Hub, encoded, make_delta

pytestmark = pytest.mark.integration


@pytest.fixture
def node(hub: Hub) -> str:
    return hub.add_node("alpha")


@pytest.fixture
def round_id(hub: Hub) -> int:
    return hub.open_round(min_clients=1, deadline_seconds=300)["id"]


def test_replay_with_the_same_key_returns_the_same_receipt_once(hub, node, round_id) -> None:
    body = encoded(1)
    first = hub.post_update(round_id, node, body, samples=12, key="job-7")
    replay = hub.post_update(round_id, node, body, samples=12, key="job-7")
    assert first.status_code == 201 and replay.status_code == 200
    assert replay.json() == first.json()
    assert hub.round(round_id)["updates_received"] == 1
    assert hub.metric("fedmedclip_aggregator_updates_accepted_total") == 1
    assert len(hub.audit(action="update.accepted")) == 1


def test_a_second_different_update_is_a_conflict(hub, node, round_id) -> None:
    assert hub.post_update(round_id, node, encoded(1), key="a").status_code == 201
    other_body = hub.post_update(round_id, node, encoded(2), key="b")
    assert other_body.status_code == 409 and "already sent" in other_body.json()["detail"]
    reused_key = hub.post_update(round_id, node, encoded(3), key="a")
    assert reused_key.status_code == 409
    assert hub.round(round_id)["updates_received"] == 1


def _nan_update() -> bytes:
    delta = make_delta(1)
    delta["fam.l1.bias"][3] = float("nan")
    return encode_update(delta, base_version=0, quantization="fp16", level=3)


def _corrupt(body: bytes) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes(b ^ 0xFF for b in body[middle : middle + 64]) + body[middle + 64 :]


@pytest.mark.parametrize(
    ("make_body", "status", "message"),
    [
        (lambda: encoded(1, base_version=3), 400, "base version 3, expected 0"),
        (lambda: encoded(1)[:-200], 400, "invalid update"),
        (lambda: _corrupt(encoded(1)), 400, "invalid update"),
        (lambda: b"", 400, "empty"),
        (lambda: b"not an update at all", 400, "bad magic"),
        (_nan_update, 400, "NaN"),
        (lambda: b"\0" * (8 * 1024 * 1024 + 1), 413, "limit of 8388608 bytes"),
    ],
    ids=["wrong-base", "truncated", "corrupt", "empty", "garbage", "nan", "oversized"],
)
def test_bad_payloads_are_refused_and_nothing_is_stored(
    hub, node, round_id, make_body, status, message
) -> None:
    response = hub.post_update(round_id, node, make_body(), key="bad")
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert hub.round(round_id)["updates_received"] == 0
    rejected = hub.audit(action="update.rejected")
    assert len(rejected) == 1 and message in rejected[0]["details"]["detail"]
    assert hub.metric("fedmedclip_aggregator_updates_accepted_total") == 0
    # The node can still send its real update: the refusal left no half-stored row behind.
    assert hub.post_update(round_id, node, encoded(1), key="good").status_code == 201


def test_oversized_stream_without_length_is_cut_off(hub, node, round_id) -> None:
    def chunks():
        for _ in range(144):
            yield b"\0" * 65536  # 9 MiB in all, more than the 8 MiB cap

    response = hub.client.post(
        f"/api/v1/rounds/{round_id}/updates",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {node}",
            "X-Sample-Count": "5",
            "Idempotency-Key": "stream",
        },
    )
    assert response.status_code == 413
    assert hub.round(round_id)["updates_received"] == 0


def test_update_norm_bound_is_enforced(hub: Hub, node) -> None:
    round_id = hub.open_round(max_update_norm=0.5)["id"]
    too_big = hub.post_update(round_id, node, encoded(1, scale=1.0), key="a")
    assert too_big.status_code == 400 and "exceeds the bound" in too_big.json()["detail"]
    assert hub.post_update(round_id, node, encoded(1, scale=1e-4), key="b").status_code == 201


def test_unknown_and_closed_rounds_are_refused(hub, node, round_id) -> None:
    unknown = hub.post_update(999, node, encoded(1))
    assert unknown.status_code == 404 and "round 999" in unknown.json()["detail"]
    hub.client.post(f"/api/v1/rounds/{round_id}/cancel", headers=ADMIN)
    closed = hub.post_update(round_id, node, encoded(1))
    assert closed.status_code == 409 and "cancelled" in closed.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Sample-Count": "many"}, "X-Sample-Count"),
        ({"X-Sample-Count": "0"}, "X-Sample-Count"),
        ({"Idempotency-Key": ""}, "Idempotency-Key"),
        ({"X-Local-Metrics": "{not json"}, "X-Local-Metrics is refused: not valid JSON"),
        ({"X-Local-Metrics": '{"acc": "high"}'}, "must be a finite number"),
        ({"X-Local-Metrics": "[1, 2]"}, "must be a JSON object"),
    ],
)
def test_bad_headers_are_4xx_naming_the_header(hub, node, round_id, headers, message) -> None:
    base = {"Authorization": f"Bearer {node}", "X-Sample-Count": "5", "Idempotency-Key": "k"}
    response = hub.client.post(
        f"/api/v1/rounds/{round_id}/updates", content=encoded(1), headers={**base, **headers}
    )
    assert 400 <= response.status_code < 500
    assert message.lower() in response.json()["detail"].lower()
    assert hub.round(round_id)["updates_received"] == 0


def test_updates_from_each_node_are_counted_separately(hub, node, round_id) -> None:
    other = hub.add_node("beta")
    assert hub.post_update(round_id, node, encoded(1), key="same").status_code == 201
    assert hub.post_update(round_id, other, encoded(1), key="same").status_code == 201
    assert hub.round(round_id)["updates_received"] == 2
