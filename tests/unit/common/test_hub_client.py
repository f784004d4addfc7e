"""The shared hub client's model download (size cap, blob checks) and ``ensure_global``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import torch
from fastapi import FastAPI, Response

from fedmedclip.model_store import ModelStore, blob_sha256, encode_blob
from fedmedclip.schemas import ModelInfo
from services.common.hub_client import HubClient, HubError, ensure_global
from tests.support.processes import ThreadedServer

BLOBS = {
    1: encode_blob({"w": torch.ones(4, 4)}, {"version": 1}),
    2: encode_blob({"w": torch.zeros(4, 4)}, {"version": 7}),  # says it is another version
    3: b"not a safetensors file at all",
}


def _info(version: int) -> ModelInfo:
    return ModelInfo(
        version=version,
        parent_version=None,
        round_id=None,
        contributors=[],
        update_hashes=[],
        metrics={},
        blob_sha256=blob_sha256(BLOBS[version]),
        created_at=datetime.now(UTC),
    )


class BlobHub:
    def __init__(self) -> None:
        self.downloads = 0
        self.app = FastAPI()

        @self.app.get("/api/v1/models/{version}/blob")
        def blob(version: int) -> Response:
            self.downloads += 1
            data = BLOBS[version]
            return Response(data, headers={"X-Model-SHA256": blob_sha256(data)})


@pytest.fixture
def hub() -> Iterator[tuple[BlobHub, str]]:
    blob_hub = BlobHub()
    with ThreadedServer(blob_hub.app) as server:
        yield blob_hub, server.url


def test_a_blob_over_the_cap_is_refused_while_streaming(hub) -> None:
    _, url = hub
    with (
        HubClient(url, "tok", retries=0, max_model_bytes=64) as client,
        pytest.raises(HubError, match="larger than the 64 byte cap"),
    ):
        client.download_model(_info(1))


@pytest.mark.parametrize(
    ("version", "message"), [(2, "says it is version 7"), (3, "not a model blob")]
)
def test_a_blob_must_be_a_model_of_the_announced_version(hub, version, message) -> None:
    _, url = hub
    with HubClient(url, "tok", retries=0) as client, pytest.raises(HubError, match=message):
        client.download_model(_info(version))


def test_ensure_global_downloads_only_what_the_store_lacks(hub, tmp_path) -> None:
    blob_hub, url = hub
    store = ModelStore(tmp_path)
    with HubClient(url, "tok", retries=0) as client:
        first = ensure_global(client, store, _info(1))
        again = ensure_global(client, store, _info(1))
    assert blob_hub.downloads == 1
    assert first.sha256 == again.sha256 == blob_sha256(BLOBS[1])
    assert store.load_global(1).sha256 == blob_sha256(BLOBS[1])
