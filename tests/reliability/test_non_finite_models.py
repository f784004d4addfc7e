"""No non-finite global model, ever: huge-but-finite updates against the hub's API.

Two nodes send codec-valid updates whose values are 2e38 everywhere (finite in float32, but
their float32 sum is not) to a ``trimmed_mean`` round without ``max_update_norm``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedmedclip.codec import encode_update
from tests.reliability.support import threaded_hub
from tests.support.hub import ADMIN, SHAPES, Hub, encoded

pytestmark = pytest.mark.integration

HUGE = 2e38


def _huge(base_version: int) -> bytes:
    delta = {k: torch.full(s, HUGE) for k, s in SHAPES.items()}
    return encode_update(delta, base_version=base_version, quantization="int8", level=3)


def _round_with(hub: Hub, tokens: dict[str, str], bodies: dict[str, bytes], **options) -> dict:
    info = hub.open_round(min_clients=len(bodies), **options)
    for name, body in bodies.items():
        response = hub.post_update(info["id"], tokens[name], body, key=f"{name}-{info['id']}")
        assert response.status_code == 201, (name, response.text)
    closed = hub.close(info["id"])
    assert closed.status_code == 200, closed.text
    return closed.json()


def _all_finite(hub: Hub, version: int) -> bool:
    tensors, _, _ = hub.weights(version)
    return all(bool(torch.isfinite(t).all()) for t in tensors.values())


def test_huge_finite_updates_never_publish_a_non_finite_model(tmp_path: Path, figures) -> None:
    with threaded_hub(tmp_path / "hub") as (_, hub):
        tokens = {name: hub.add_node(name) for name in ("evil-a", "evil-b", "honest")}
        evil = {"evil-a": _huge(0), "evil-b": _huge(0)}

        # Aggregated in float64: the trimmed mean of 2e38 and 2e38 is 2e38, not inf.
        first = _round_with(hub, tokens, evil, aggregation_rule="trimmed_mean")
        assert first["state"] == "published"
        assert _all_finite(hub, first["result_version"])

        # New rounds build on production (still version 0), so honest nodes go on.
        second = _round_with(hub, tokens, {"honest": encoded(1)})
        assert second["base_version"] == 0 and second["base_reason"] == "production version"
        assert second["state"] == "published" and _all_finite(hub, second["result_version"])

        # Built on the 2e38 version on purpose, the sum overflows float32: the round fails
        # with the reason and publishes nothing.
        versions_before = len(hub.client.get("/api/v1/models", headers=ADMIN).json())
        base = first["result_version"]
        third = _round_with(
            hub,
            tokens,
            {"evil-a": _huge(base), "evil-b": _huge(base)},
            aggregation_rule="trimmed_mean",
            base_version=base,
        )
        assert third["state"] == "failed" and third["result_version"] is None
        assert "would publish is not finite" in third["reason"], third["reason"]
        assert len(hub.client.get("/api/v1/models", headers=ADMIN).json()) == versions_before
        assert [e["details"]["reason"] for e in hub.audit(action="round.failed")] == [
            third["reason"]
        ]
    figures.set("poisoning.huge_finite_rounds_tried", 3)


@pytest.mark.slow
def test_the_default_norm_bound_clips_huge_updates_among_honest_ones(tmp_path: Path) -> None:
    honest = {f"honest-{i}": encoded(i) for i in range(3)}
    with threaded_hub(tmp_path / "hub") as (_, hub):
        tokens = {name: hub.add_node(name) for name in [*honest, "evil-a", "evil-b"]}
        bodies = honest | {"evil-a": _huge(0), "evil-b": _huge(0)}
        closed = _round_with(hub, tokens, bodies, aggregation_rule="weighted_mean")
        assert closed["state"] == "published" and closed["norm_bound_factor"] == 3.0
        base, _, _ = hub.weights(0)
        published, _, _ = hub.weights(closed["result_version"])
        moved = max(float((published[k] - base[k]).abs().max()) for k in SHAPES)
        assert moved < 1.0, moved  # two 2e38 updates, clipped to 3 x an honest norm

        off = _round_with(hub, tokens, bodies, aggregation_rule="median", norm_bound_factor=None)
        assert off["norm_bound_factor"] is None and off["applied_clip_norm"] is None
