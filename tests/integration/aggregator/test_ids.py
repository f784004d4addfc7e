"""Ids beyond what the database stores are refused with a 422 before any query runs."""

from __future__ import annotations

import pytest

from fedmedclip.ids import SQL_INTEGER_MAX
from tests.support.hub import ADMIN, Hub, encoded

TOO_BIG = [2**63, SQL_INTEGER_MAX + 1, 10**30]


@pytest.mark.parametrize("value", TOO_BIG, ids=["2^63", "2^31", "10^30"])
def test_oversized_ids_in_paths_and_bodies_are_422(hub: Hub, value: int) -> None:
    node = hub.add_node("site-a")
    calls = [
        hub.client.get(f"/api/v1/rounds/{value}", headers=ADMIN),
        hub.client.post(f"/api/v1/rounds/{value}/close", headers=ADMIN),
        hub.client.post(f"/api/v1/rounds/{value}/cancel", headers=ADMIN),
        hub.post_update(value, node, encoded(1)),
        hub.client.get(f"/api/v1/models/{value}", headers=ADMIN),
        hub.client.get(f"/api/v1/models/{value}/blob", headers=ADMIN),
        hub.client.post(f"/api/v1/models/{value}/promote", headers=ADMIN),
        hub.client.delete(f"/api/v1/nodes/{value}", headers=ADMIN),
        hub.client.post("/api/v1/rounds", json={"base_version": value}, headers=ADMIN),
    ]
    for response in calls:
        assert response.status_code == 422, (response.request.url, response.text)
        detail = response.json()["detail"]
        assert f"less than or equal to {SQL_INTEGER_MAX}" in detail
        assert "<" not in detail and "object at" not in detail  # no Python reprs


def test_the_largest_storable_id_is_a_plain_404(hub: Hub) -> None:
    for path in (f"/api/v1/rounds/{SQL_INTEGER_MAX}", f"/api/v1/models/{SQL_INTEGER_MAX}"):
        response = hub.client.get(path, headers=ADMIN)
        assert response.status_code == 404, response.text
