"""A thin test client for the hub (aggregator) app plus helpers to build real encoded updates;
shared by the aggregator integration suite and the reliability suite."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
import torch
from fastapi.testclient import TestClient

from fedmedclip.codec import encode_update
from fedmedclip.model import expected_shapes
from fedmedclip.model_store import decode_blob
from fedmedclip.schemas import TaskSpec
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings

ADMIN_TOKEN = "test-admin-token"
TASK = TaskSpec(class_names=["benign", "malignant", "normal"], backbone="ViT-S-32")
SHAPES = expected_shapes(TASK.adapter_config())
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_delta(seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=generator) * scale for k, s in SHAPES.items()}


def encoded(seed: int, base_version: int = 0, quantization: str = "int8", **kw) -> bytes:
    return encode_update(
        make_delta(seed, **kw), base_version=base_version, quantization=quantization, level=3
    )


class Hub:
    """Calls the hub's API the way the admin and the nodes do."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def set_task(self, task: TaskSpec = TASK) -> httpx.Response:
        return self.client.put("/api/v1/task", json=task.model_dump(mode="json"), headers=ADMIN)

    def add_node(self, name: str) -> str:
        response = self.client.post("/api/v1/nodes", json={"name": name}, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()["token"]

    def open_round(self, **body) -> dict:
        response = self.client.post("/api/v1/rounds", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()

    def round(self, round_id: int) -> dict:
        response = self.client.get(f"/api/v1/rounds/{round_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    def post_update(
        self,
        round_id: int,
        token: str,
        body: bytes,
        *,
        samples: int = 10,
        key: str = "k1",
        metrics: Mapping[str, float] | str | None = None,
    ) -> httpx.Response:
        headers = {
            **bearer(token),
            "X-Sample-Count": str(samples),
            "Idempotency-Key": key,
            "Content-Type": "application/octet-stream",
        }
        if metrics is not None:
            headers["X-Local-Metrics"] = (
                metrics if isinstance(metrics, str) else json.dumps(dict(metrics))
            )
        return self.client.post(f"/api/v1/rounds/{round_id}/updates", content=body, headers=headers)

    def close(self, round_id: int) -> httpx.Response:
        return self.client.post(f"/api/v1/rounds/{round_id}/close", headers=ADMIN)

    def weights(self, version: int) -> tuple[dict[str, torch.Tensor], dict, httpx.Response]:
        response = self.client.get(f"/api/v1/models/{version}/blob", headers=ADMIN)
        assert response.status_code == 200, response.text
        tensors, meta = decode_blob(response.content)
        return tensors, meta, response

    def audit(self, **params) -> list[dict]:
        response = self.client.get("/api/v1/audit", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    def metric(self, name: str) -> float:
        """The value of one sample line of ``/metrics`` (0 when absent)."""
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0


@contextmanager
def running_hub(settings: AggregatorSettings) -> Iterator[Hub]:
    """An app instance with its lifespan running (migrations, deadline watcher)."""
    with TestClient(create_app(settings)) as client:
        yield Hub(client)
