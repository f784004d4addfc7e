"""At most MAX_CONCURRENT_DECODES requests decode images at once; the others wait their turn.

Decoding is where a request's memory peaks (a few hundred MB for an image at the pixel cap),
so this cap, not the number of clients, bounds the memory of a burst.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fedmedclip.backbone import Backbone
from tests.integration.inference.helpers import client, make_settings, serve

pytestmark = pytest.mark.integration

CLIENTS = 8


class DecodeCounter:
    """Wraps the real ``Backbone.prepare_bytes`` to record how many run at the same time."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._real = Backbone.prepare_bytes

    def prepare_bytes(self, backbone: Backbone, data: bytes, max_pixels: int) -> object:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.2)  # hold the slot long enough for the other requests to pile up
            return self._real(backbone, data, max_pixels)
        finally:
            with self._lock:
                self.active -= 1


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 3])
def test_concurrent_decodes_never_exceed_the_setting(store, site, tmp_path, monkeypatch, limit):
    counter = DecodeCounter()
    monkeypatch.setattr(
        Backbone, "prepare_bytes", lambda backbone, *args: counter.prepare_bytes(backbone, *args)
    )
    image = site.image_paths[0].read_bytes()
    settings = make_settings(store.root, tmp_path, max_concurrent_decodes=limit)
    with serve(settings) as server, client(server) as http:
        barrier = threading.Barrier(CLIENTS)

        def post(_: int) -> int:
            barrier.wait(timeout=60)
            return http.post("/predict", files={"file": ("x.png", image)}).status_code

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(post, range(CLIENTS)))
    assert statuses == [200] * CLIENTS
    assert counter.peak == limit if limit == 1 else 1 < counter.peak <= limit
