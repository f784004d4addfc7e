"""Secure aggregation over the hub's REST API: five sites driven through HubClient against
the real hub app served on loopback (SQLite; the last test repeats a round on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sqlalchemy import create_engine, select

from fedmedclip.enums import RoundState
from fedmedclip.schemas import RoundCreate
from fedmedclip.secagg import SecAggClient
from fedmedclip.secagg.messages import Phase
from fedmedclip.secagg.vectors import flatten_delta
from services.aggregator.app import create_app
from services.aggregator.db.models import SecAggMessage
from services.aggregator.settings import AggregatorSettings
from services.common.hub_client import HubAdminClient, HubClient, HubRejected
from tests.support.hub import ADMIN_TOKEN, SHAPES, TASK, make_delta
from tests.support.processes import ThreadedServer

SITES = ("site_a", "site_b", "site_c", "site_d", "site_e")
WEIGHTS = {"site_a": 10, "site_b": 25, "site_c": 7, "site_d": 40, "site_e": 18}


@dataclass
class Federation:
    url: str
    database_url: str
    admin: HubAdminClient
    hubs: dict[str, HubClient]


def _federation(settings: AggregatorSettings) -> Iterator[Federation]:
    with ExitStack() as stack:
        server = stack.enter_context(ThreadedServer(create_app(settings)))
        admin = stack.enter_context(HubAdminClient(server.url, ADMIN_TOKEN, retries=0))
        admin.set_task(TASK)
        hubs = {
            name: stack.enter_context(HubClient(server.url, admin.add_node(name).token, retries=0))
            for name in SITES
        }
        yield Federation(server.url, settings.resolved_database_url(), admin, hubs)


@pytest.fixture
def federation(tmp_path) -> Iterator[Federation]:
    settings = AggregatorSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN)
    yield from _federation(settings)


def _updates() -> dict[str, tuple[np.ndarray, int]]:
    return {
        name: (flatten_delta(make_delta(i, scale=0.02), SHAPES), WEIGHTS[name])
        for i, name in enumerate(SITES)
    }


def _open(federation: Federation, **options) -> int:
    request = RoundCreate(secure_aggregation=True, min_clients=3, **options)
    return federation.admin.open_round(request).id


class Sites:
    """The five sites' protocol clients, each talking to the hub through its own HubClient."""

    def __init__(self, federation: Federation, round_id: int) -> None:
        self.hubs = federation.hubs
        self.round_id = round_id
        status = {n: h.secagg_status(round_id) for n, h in self.hubs.items()}
        self.clients = {n: SecAggClient(s.client_id, s.params) for n, s in status.items()}

    def advertise(self, names=SITES) -> None:
        for name in names:
            self.hubs[name].send_secagg(self.round_id, self.clients[name].advertise())

    def share(self, names=SITES) -> None:
        for name in names:
            directory = self.hubs[name].secagg_status(self.round_id).directory
            assert directory is not None
            self.hubs[name].send_secagg(self.round_id, self.clients[name].share_keys(directory))

    def upload(self, updates: Mapping[str, tuple[np.ndarray, int]], names=SITES) -> None:
        for name in names:
            inbox = self.hubs[name].secagg_status(self.round_id).inbox
            assert inbox is not None
            masked = self.clients[name].masked_input(inbox, *updates[name])
            self.hubs[name].send_secagg(self.round_id, masked)

    def unmask(self, names=SITES) -> None:
        for name in names:
            request = self.hubs[name].secagg_status(self.round_id).unmask_request
            assert request is not None
            self.hubs[name].send_secagg(self.round_id, self.clients[name].unmask(request))


def _published_delta(federation: Federation, version: int) -> np.ndarray:
    def tensors(v: int) -> dict[str, torch.Tensor]:
        from fedmedclip.model_store import decode_blob

        info = federation.admin.model_info(v)
        return decode_blob(federation.admin.download_model(info))[0]

    new, base = tensors(version), tensors(version - 1)
    return flatten_delta({k: new[k] - base[k] for k in SHAPES}, SHAPES)


def _weighted_mean(updates, names) -> np.ndarray:
    total = sum(updates[n][1] for n in names)
    return sum(updates[n][0] * updates[n][1] for n in names) / total


def test_a_secure_round_publishes_the_plain_weighted_mean(federation: Federation) -> None:
    round_id = _open(federation)
    info = federation.admin.get_round(round_id)
    assert info.secure_aggregation and info.secagg_phase is Phase.advertise
    assert info.participants == list(SITES) and info.norm_bound_factor is None
    updates = _updates()
    sites = Sites(federation, round_id)
    sites.advertise()
    assert federation.admin.get_round(round_id).secagg_phase is Phase.share
    sites.share()
    sites.upload(updates)
    assert federation.admin.get_round(round_id).secagg_phase is Phase.unmask
    sites.unmask()
    info = federation.admin.get_round(round_id)
    assert info.state is RoundState.published, info.reason
    assert info.secagg_phase is Phase.done
    published = _published_delta(federation, info.result_version)
    expected = _weighted_mean(updates, SITES)
    # float32 model weights on top of a 2^-25 quantisation step
    np.testing.assert_allclose(published, expected, atol=2e-6)
    model = federation.admin.model_info(info.result_version)
    assert model.contributors == list(SITES)
    phases = [e.details["phase"] for e in federation.admin.audit(action="round.secagg_phase")]
    assert sorted(phases) == ["share", "unmask", "upload"]
