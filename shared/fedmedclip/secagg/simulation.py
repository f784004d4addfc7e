"""Run a whole round in one process: the same client and hub code, messages as JSON.

Used by the research simulator (``--secure-aggregation``), the tests and ``bench/secagg.py``.
Every message is serialised to JSON and parsed back, as it would cross the REST API, so the
byte counts are those of the wire and the models' validation runs on every hop.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from pydantic import BaseModel

from fedmedclip.secagg.client import SecAggClient
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.server import Aggregate, SecAggServer

M = TypeVar("M", bound=BaseModel)


@dataclass
class RoundCosts:
    """Bytes each site sent and received (JSON bodies) and the hub's CPU time."""

    bytes_up: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_down: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hub_cpu_seconds: float = 0.0
    client_cpu_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def _hop(message: M, costs: dict[str, int], site: str) -> M:
    body = message.model_dump_json()
    costs[site] += len(body)
    return type(message).model_validate_json(body)


def run_round(
    params: RoundParams,
    updates: Mapping[str, tuple[np.ndarray, int]],
    *,
    drop_before_upload: Collection[str] = (),
    drop_after_upload: Collection[str] = (),
    costs: RoundCosts | None = None,
) -> Aggregate:
    """Run every phase for the sites in ``updates`` (``{site: (values, weight)}``).

    Sites in ``drop_before_upload`` vanish after sharing keys; sites in
    ``drop_after_upload`` after uploading their masked vector. Raises ``RoundFailed`` when
    the survivors cannot unmask the sum.
    """
    costs = costs if costs is not None else RoundCosts()
    server = SecAggServer(params)
    clients = {site: SecAggClient(site, params) for site in sorted(updates)}

    def timed(site: str, call, *args):  # noqa: ANN001, ANN202 - a local helper
        started = time.process_time()
        result = call(*args)
        costs.client_cpu_seconds[site] += time.process_time() - started
        return result

    hub_started = time.process_time()
    for site, client in clients.items():
        server.receive_advertise(_hop(timed(site, client.advertise), costs.bytes_up, site))
    directory = server.close_advertise()
    for site, client in clients.items():
        received = _hop(directory, costs.bytes_down, site)
        server.receive_shares(_hop(timed(site, client.share_keys, received), costs.bytes_up, site))
    inboxes = server.close_shares()
    uploaders = [s for s in clients if s not in drop_before_upload]
    for site in uploaders:
        inbox = _hop(inboxes[site], costs.bytes_down, site)
        values, weight = updates[site]
        masked = timed(site, clients[site].masked_input, inbox, values, weight)
        server.receive_masked(_hop(masked, costs.bytes_up, site))
    request = server.close_upload()
    for site in uploaders:
        if site in drop_after_upload:
            continue
        received = _hop(request, costs.bytes_down, site)
        response = timed(site, clients[site].unmask, received)
        server.receive_unmask(_hop(response, costs.bytes_up, site))
    aggregate = server.finish()
    # The hub's time is the whole loop less the sites' own work.
    costs.hub_cpu_seconds += (
        time.process_time() - hub_started - sum(costs.client_cpu_seconds.values())
    )
    return aggregate
