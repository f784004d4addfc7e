"""Secure aggregation over the hub's REST API: five sites driven through HubClient against
the real hub app served on loopback (SQLite; the dropout test also on PostgreSQL)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import torch
from sqlalchemy import create_engine, select

from fedmedclip.aggregation import clip_update
from fedmedclip.class_statistics import drop_statistics, is_statistic
from fedmedclip.enums import RoundState
from fedmedclip.model_store import decode_blob
from fedmedclip.privacy import (
    DPConfig,
    PrivacyAccountant,
    epsilon_per_round,
    noise_share,
    privatize_delta,
)
from fedmedclip.schemas import RoundCreate
from fedmedclip.secagg import RoundParams, SecAggClient
from fedmedclip.secagg.messages import AdvertiseKeys, MaskedInput, Phase, ShareKeys
from fedmedclip.secagg.vectors import flatten_delta
from services.aggregator.app import create_app
from services.aggregator.db.models import SecAggMessage
from services.aggregator.settings import AggregatorSettings
from services.common.hub_client import HubAdminClient, HubClient, HubRejected
from tests.support.hub import ADMIN_TOKEN, SHAPES, TASK, encoded, make_delta
from tests.support.processes import ThreadedServer, wait_until
from tests.support.secagg import shifted

SITES = ("site_a", "site_b", "site_c", "site_d", "site_e")
WEIGHTS = {"site_a": 10, "site_b": 25, "site_c": 7, "site_d": 40, "site_e": 18}


@dataclass
class Federation:
    url: str
    database_url: str
    admin: HubAdminClient
    hubs: dict[str, HubClient]
    tokens: dict[str, str]


def _federation(settings: AggregatorSettings) -> Iterator[Federation]:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ThreadedServer(create_app(settings)))
        admin = stack.enter_context(HubAdminClient(server.url, ADMIN_TOKEN, retries=0))
        admin.set_task(TASK)
        tokens = {name: admin.add_node(name).token for name in SITES}
        hubs = {
            name: stack.enter_context(HubClient(server.url, token, retries=0))
            for name, token in tokens.items()
        }
        yield Federation(server.url, settings.resolved_database_url(), admin, hubs, tokens)


@pytest.fixture
def federation(tmp_path) -> Iterator[Federation]:
    settings = AggregatorSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN)
    yield from _federation(settings)


@pytest.fixture
def federation_on_each_db(settings: AggregatorSettings) -> Iterator[Federation]:
    """The same, on SQLite and on a real PostgreSQL (``settings`` of this folder's conftest)."""
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


def _published_delta(federation: Federation, round_id: int) -> np.ndarray:
    """The published version of ``round_id`` less the version it trained from."""
    info = federation.admin.get_round(round_id)

    def tensors(version: int) -> dict[str, torch.Tensor]:
        blob = federation.admin.download_model(federation.admin.model_info(version))
        return decode_blob(blob)[0]

    new, base = tensors(info.result_version), tensors(info.base_version)
    return flatten_delta({k: new[k] - base[k] for k in SHAPES}, SHAPES)


def _weighted_mean(updates, names) -> np.ndarray:
    total = sum(updates[n][1] for n in names)
    return sum(updates[n][0] * updates[n][1] for n in names) / total


@pytest.mark.slow
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
    published = _published_delta(federation, round_id)
    expected = _weighted_mean(updates, SITES)
    # float32 model weights on top of a 2^-25 quantisation step
    np.testing.assert_allclose(published, expected, atol=2e-6)
    model = federation.admin.model_info(info.result_version)
    assert model.contributors == list(SITES)
    phases = [e.details["phase"] for e in federation.admin.audit(action="round.secagg_phase")]
    assert sorted(phases) == ["share", "unmask", "upload"]


@pytest.mark.slow
def test_a_site_dropping_after_its_upload_is_recovered(
    federation_on_each_db: Federation,
) -> None:
    federation = federation_on_each_db
    round_id = _open(federation, secagg_phase_seconds=60)
    updates = _updates()
    sites = Sites(federation, round_id)
    sites.advertise()
    sites.share()
    sites.upload(updates)
    survivors = SITES[:4]
    sites.unmask(survivors)  # site_e uploaded, then went away
    assert federation.admin.get_round(round_id).state is RoundState.open
    info = federation.admin.close_round(round_id)  # ends the unmask phase, as its deadline
    assert info.state is RoundState.published, info.reason
    # site_e's masked vector is in the sum: the mean is over all five uploads
    expected = _weighted_mean(updates, SITES)
    np.testing.assert_allclose(_published_delta(federation, round_id), expected, atol=2e-6)


@pytest.mark.slow
def test_a_site_dropping_before_its_upload_is_left_out(federation: Federation) -> None:
    round_id = _open(federation)
    updates = _updates()
    sites = Sites(federation, round_id)
    sites.advertise()
    sites.share()
    uploaders = SITES[1:]
    sites.upload(updates, uploaders)
    federation.admin.close_round(round_id)  # upload phase ends without site_a
    sites.unmask(uploaders)
    info = federation.admin.get_round(round_id)
    assert info.state is RoundState.published, info.reason
    expected = _weighted_mean(updates, uploaders)
    np.testing.assert_allclose(_published_delta(federation, round_id), expected, atol=2e-6)


def test_fewer_sites_than_the_threshold_fail_the_round_with_a_reason(
    federation: Federation,
) -> None:
    round_id = _open(federation, secagg_threshold=4)
    sites = Sites(federation, round_id)
    sites.advertise(SITES[:3])
    info = federation.admin.close_round(round_id)
    assert info.state is RoundState.failed and info.secagg_phase is Phase.failed
    assert info.reason == (
        "secure aggregation failed: only 3 sites advertised keys; the threshold is 4"
    )
    with pytest.raises(HubRejected) as refused:
        sites.advertise(SITES[3:4])
    assert refused.value.status_code == 409 and refused.value.code == "secagg_round_closed"


@pytest.mark.slow
def test_too_few_unmask_answers_fail_the_round(federation: Federation) -> None:
    round_id = _open(federation, secagg_threshold=4)
    sites = Sites(federation, round_id)
    sites.advertise()
    sites.share()
    sites.upload(_updates())
    sites.unmask(SITES[:3])
    info = federation.admin.close_round(round_id)
    assert info.state is RoundState.failed
    assert "only 3 sites answered the unmasking phase; the threshold is 4" in info.reason
    assert federation.admin.list_models()[-1].version == 0  # nothing published


def _refusal(call) -> HubRejected:
    with pytest.raises(HubRejected) as refused:
        call()
    return refused.value


def test_replayed_misrouted_and_wrong_phase_messages_are_refused(
    federation: Federation,
) -> None:
    first = _open(federation)
    old = Sites(federation, first)
    sent = old.clients["site_a"].advertise()
    hub = federation.hubs["site_a"]
    hub.send_secagg(first, sent)
    replay = _refusal(lambda: hub.send_secagg(first, sent))  # the same message again
    assert (replay.status_code, replay.code) == (409, "secagg_replay")
    assert hub.secagg_status(first).sent == [Phase.advertise]
    other = MaskedInput(round_id=sent.round_id, client_id="site_a", masked=b"\0" * 16)
    wrong = _refusal(lambda: hub.send_secagg(first, other))
    assert (wrong.status_code, wrong.code) == (409, "secagg_wrong_phase")
    assert "is in phase advertise, not upload" in wrong.detail
    forged = AdvertiseKeys(
        round_id=sent.round_id, client_id="site_b", cipher_key=b"1" * 32, mask_key=b"2" * 32
    )
    sender = _refusal(lambda: hub.send_secagg(first, forged))  # site_a posing as site_b
    assert (sender.status_code, sender.code) == (403, "secagg_wrong_sender")
    malformed = httpx.post(
        f"{federation.url}/api/v1/rounds/{first}/secagg/advertise",
        content=b'{"round_id": 3}',
        headers={"Authorization": f"Bearer {federation.tokens['site_a']}"},
    )
    assert malformed.status_code == 422 and malformed.json()["code"] == "secagg_malformed"
    cancelled = federation.admin.cancel_round(first)
    assert cancelled.secagg_phase is Phase.failed and cancelled.secagg_phase_deadline is None
    second = _open(federation)
    misrouted = _refusal(lambda: hub.send_secagg(second, sent))  # round 1's message
    assert (misrouted.status_code, misrouted.code) == (409, "secagg_replay")
    assert hub.secagg_status(second).sent == []


@pytest.mark.slow
@pytest.mark.parametrize("field", ["cipher_key", "mask_key"])
def test_a_small_order_key_is_refused_and_the_round_goes_on_without_its_site(
    federation: Federation, field: str
) -> None:
    round_id = _open(federation)
    sites, updates, honest = Sites(federation, round_id), _updates(), SITES[:4]
    liar = federation.hubs["site_e"]
    keys = sites.clients["site_e"].advertise().model_copy(update={field: bytes(32)})
    refused = _refusal(lambda: liar.send_secagg(round_id, keys))
    assert (refused.status_code, refused.code) == (422, "secagg_invalid")
    assert f"{field} of 'site_e' is not a usable X25519 public key" in refused.detail
    assert liar.secagg_status(round_id).sent == []  # nothing stored
    sites.advertise(honest)
    federation.admin.close_round(round_id)  # the key phase ends without the liar
    assert "site_e" not in federation.hubs["site_a"].secagg_status(round_id).directory.keys
    sites.share(honest)
    sites.upload(updates, honest)
    sites.unmask(honest)
    info = federation.admin.get_round(round_id)
    assert info.state is RoundState.published, info.reason
    np.testing.assert_allclose(
        _published_delta(federation, round_id), _weighted_mean(updates, honest), atol=2e-6
    )


@pytest.mark.slow
def test_extra_shares_at_unmask_are_refused_and_nothing_is_stored(
    federation: Federation,
) -> None:
    """400 extra seed shares of one owner (a 35 KB body) once cost the hub 6-15 s of CPU
    to rebuild; now they are refused at intake and the honest answer still counts."""
    round_id = _open(federation)
    sites, updates = Sites(federation, round_id), _updates()
    sites.advertise()
    sites.share()
    sites.upload(updates)
    hub = federation.hubs["site_a"]
    honest = sites.clients["site_a"].unmask(hub.secagg_status(round_id).unmask_request)
    (owned,) = [s for s in honest.seed_shares if s.owner == "site_b"]
    extra = [owned.model_copy(update={"index": 10 + i}) for i in range(400)]
    flood = honest.model_copy(update={"seed_shares": [*honest.seed_shares, *extra]})
    assert len(flood.model_dump_json()) > 34_000
    refused = _refusal(lambda: hub.send_secagg(round_id, flood))
    assert (refused.status_code, refused.code) == (422, "secagg_invalid")
    assert "'site_a' revealed 401 shares of 'site_b'" in refused.detail
    assert Phase.unmask not in hub.secagg_status(round_id).sent  # nothing stored
    hub.send_secagg(round_id, honest)
    sites.unmask(SITES[1:])
    info = federation.admin.get_round(round_id)
    assert info.state is RoundState.published, info.reason
    np.testing.assert_allclose(
        _published_delta(federation, round_id), _weighted_mean(updates, SITES), atol=2e-6
    )


def _values_of(value: float) -> Callable[[RoundParams, int], np.ndarray]:
    """Fixed-point units that turn a site's values into ``value`` (at its weight)."""

    def units(params: RoundParams, weight: int) -> np.ndarray:
        shift = np.full(params.length, np.ldexp(value * weight, params.frac_bits))
        shift[-1] = 0
        return shift

    return units


def _weight_of(hostile: int) -> Callable[[RoundParams, int], np.ndarray]:
    """Units that turn a site's weight ``weight`` into ``hostile``."""

    def units(params: RoundParams, weight: int) -> np.ndarray:
        shift = np.zeros(params.length)
        shift[-1] = hostile - weight
        return shift

    return units


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shift", "problem"),
    [
        (_values_of(1000.0), "above the round's bound 1"),
        (_weight_of(2**30), "total weight 1073741864 is outside [5, 5000000]"),
        (_weight_of(-39), "total weight 1 is outside [5, 5000000]"),
    ],
    ids=["values of 1000", "weight 2^30", "weight -39"],
)
def test_one_site_outside_the_round_bounds_fails_the_round_and_nothing_is_published(
    federation: Federation, shift, problem: str
) -> None:
    """site_e masks what no honest site sends (the mask hides it, its sum does not): values
    of 1000 where the others send about 0.01, or a weight of 2^30 or of -39 where four
    others weigh 10 each (then the total weight is 1 and the mean would be amplified 40x)."""
    round_id = _open(federation, clip_norm=1.0)
    sites = Sites(federation, round_id)
    updates = {n: (values * 0.5, 10) for n, (values, _) in _updates().items()}
    sites.advertise()
    sites.share()
    sites.upload(updates, SITES[:4])
    hub, client = federation.hubs["site_e"], sites.clients["site_e"]
    masked = client.masked_input(hub.secagg_status(round_id).inbox, *updates["site_e"])
    units = shift(client.params, updates["site_e"][1])
    hub.send_secagg(round_id, shifted(masked, units, client.params.fixed_point))
    sites.unmask()
    info = federation.admin.get_round(round_id)
    assert info.state is RoundState.failed
    assert info.reason.startswith("secure aggregation failed: ") and problem in info.reason
    assert "no honest site sends" in info.reason
    assert federation.admin.list_models()[-1].version == 0  # nothing published


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"aggregation_rule": "median"}, "only computes a weighted mean"),
        ({"max_update_norm": 1.0}, "max_update_norm needs the hub to see each update"),
        ({"participants": ["site_a", "site_b"]}, "at least 3 sites, got 2"),
        ({"participants": ["site_a", "site_b", "nobody"]}, "['nobody'] are not registered"),
        ({"secagg_threshold": 5}, "threshold must be a strict majority"),
    ],
)
def test_secure_rounds_that_cannot_run_are_refused(
    federation: Federation, options: dict, problem: str
) -> None:
    response = httpx.post(
        f"{federation.url}/api/v1/rounds",
        json={"secure_aggregation": True, **options},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "secagg_round_refused" and problem in body["detail"]
    assert federation.admin.list_rounds() == []


def _byte_chi2(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    expected = len(data) / 256
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.slow
def test_a_stored_masked_upload_shows_nothing_of_its_update(federation: Federation) -> None:
    round_id = _open(federation)
    updates = _updates()
    updates["site_a"] = (np.zeros_like(updates["site_a"][0]), 1)  # the most telling update
    sites = Sites(federation, round_id)
    sites.advertise()
    sites.share()
    sites.upload(updates)
    engine = create_engine(federation.database_url)
    with engine.connect() as connection:
        stored = dict(
            connection.execute(
                select(SecAggMessage.node_name, SecAggMessage.body).where(
                    SecAggMessage.round_id == round_id, SecAggMessage.phase == "upload"
                )
            ).all()
        )
    engine.dispose()
    params = sites.clients["site_a"].params
    for name, (values, weight) in updates.items():
        masked = MaskedInput.model_validate_json(stored[name]).masked
        plain = params.fixed_point.encode(values * weight, weight, len(SITES)).tobytes()
        # 255 degrees of freedom: 400 is beyond p = 1e-7 for uniform bytes
        assert _byte_chi2(masked) < 400, name
        assert _byte_chi2(plain) > 10_000, name  # the clear encoding is far from uniform
        ring = np.frombuffer(masked, dtype="<u8")[:-1].astype(np.float64)
        if values.any():
            assert abs(np.corrcoef(ring, values)[0, 1]) < 0.02, name


def test_a_plain_update_to_a_secure_round_is_refused_and_not_stored(
    federation: Federation,
) -> None:
    round_id = _open(federation)
    with pytest.raises(HubRejected) as refused:
        federation.hubs["site_a"].upload_update(
            round_id, encoded(1), sample_count=10, metrics={}, idempotency_key="k"
        )
    assert (refused.value.status_code, refused.value.code) == (409, "secure_round")
    assert federation.admin.get_round(round_id).updates_received == 0


@pytest.mark.slow
def test_distributed_dp_carries_the_central_noise_and_is_accounted(
    federation: Federation,
) -> None:
    central = DPConfig(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5)
    share = noise_share(central, len(SITES))
    accountant = PrivacyAccountant()
    for round_number, uploaders in enumerate((SITES, SITES[1:]), start=1):
        dp = {"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5}
        round_id = _open(federation, dp=dp)
        assert federation.admin.get_round(round_id).dp.noise_multiplier == 1.0
        clipped = {n: clip_update(make_delta(i, scale=0.02), 1.0) for i, n in enumerate(SITES)}
        noised = {n: (flatten_delta(privatize_delta(clipped[n], share), SHAPES), 1) for n in SITES}
        sites = Sites(federation, round_id)
        sites.advertise()
        sites.share()
        sites.upload(noised, uploaders)
        if len(uploaders) < len(SITES):
            federation.admin.close_round(round_id)
        sites.unmask(uploaders)
        info = federation.admin.get_round(round_id)
        assert info.state is RoundState.published, info.reason
        # The mean is unweighted; what is left besides the clipped updates is the central
        # noise of the survivors' shares: sigma * sqrt(k / n) on the sum, over k sites.
        # The class statistics are sent as zeros, without noise, under DP.
        signal = np.mean(
            [flatten_delta(drop_statistics(clipped[n]), SHAPES) for n in uploaders], axis=0
        )
        residual = _published_delta(federation, round_id) - signal
        statistics = flatten_delta(
            {k: torch.full(v, float(is_statistic(k))) for k, v in SHAPES.items()}, SHAPES
        ).astype(bool)
        assert not residual[statistics].any()
        residual = residual[~statistics]
        k = len(uploaders)
        expected_std = central.noise_std * (k / len(SITES)) ** 0.5 / k
        assert 0.97 < residual.std() / expected_std < 1.03, round_number
        effective = central.noise_multiplier * (k / len(SITES)) ** 0.5
        accountant.step(effective)
        assert info.dp_epsilon == pytest.approx(epsilon_per_round(effective, 1e-5))
        assert info.dp_epsilon_total == pytest.approx(accountant.epsilon(1e-5))
    assert info.dp_epsilon_total > info.dp_epsilon


def test_distributed_dp_needs_secure_aggregation(federation: Federation) -> None:
    response = httpx.post(
        f"{federation.url}/api/v1/rounds",
        json={"dp": {"noise_multiplier": 1.0, "clip_norm": 1.0}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "dp_needs_secure_aggregation"


@pytest.mark.slow
def test_a_phase_ends_at_its_deadline_without_the_missing_site(federation: Federation) -> None:
    round_id = _open(federation, secagg_phase_seconds=5)
    sites = Sites(federation, round_id)
    sites.advertise(SITES[:4])
    wait_until(
        lambda: federation.admin.get_round(round_id).secagg_phase is Phase.share,
        timeout=30,
        what="the deadline watcher ends the key phase",
    )
    (event,) = federation.admin.audit(action="round.secagg_phase")
    assert event.details["cause"] == "secure aggregation phase deadline passed"
    assert event.details["sites"] == 4
    late = _refusal(lambda: sites.advertise(SITES[4:]))
    assert (late.status_code, late.code) == (409, "secagg_wrong_phase")
    status = federation.hubs["site_e"].secagg_status(round_id)
    assert status.sent == [] and "site_e" not in status.directory.keys
    excluded = _refusal(
        lambda: federation.hubs["site_e"].send_secagg(
            round_id, ShareKeys(round_id=status.params.round_id, client_id="site_e", shares=[])
        )
    )
    assert (excluded.status_code, excluded.code) == (409, "secagg_excluded")
    sites.share(SITES[:4])  # the four go on: a share message needs only their keys


def _close_from_the_api(federation: Federation, round_id: int) -> None:
    federation.admin.close_round(round_id)


def _close_from_the_console(federation: Federation, round_id: int) -> None:
    """Sign in to the hub's console with the admin token and press "Aggregate now"."""
    csrf = re.compile(r'name="csrf_token" value="([^"]+)"')
    with httpx.Client(base_url=federation.url, follow_redirects=True) as browser:
        token = csrf.search(browser.get("/console/signin").text).group(1)
        signed_in = browser.post(
            "/console/signin", data={"token": ADMIN_TOKEN, "csrf_token": token}
        )
        assert signed_in.status_code == 200, signed_in.text
        page = browser.get(f"/console/rounds/{round_id}/close")
        closed = browser.post(
            f"/console/rounds/{round_id}/close",
            data={"csrf_token": csrf.search(page.text).group(1)},
        )
        assert closed.status_code == 200 and f"Round {round_id} is open" in closed.text


def _close_by_the_deadline(federation: Federation, round_id: int) -> None:
    wait_until(
        lambda: federation.admin.get_round(round_id).secagg_phase is not Phase.advertise,
        timeout=30,
        what="the deadline watcher ends the key phase",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("close", "phase_seconds", "actor"),
    [
        (_close_from_the_api, 600, "admin"),
        (_close_from_the_console, 600, "admin"),
        (_close_by_the_deadline, 5, "system"),
    ],
    ids=["api", "console", "deadline"],
)
def test_closing_a_secure_round_early_ends_its_phase_the_same_way_from_everywhere(
    federation: Federation, close, phase_seconds: int, actor: str
) -> None:
    """The close route, the console and the deadline watcher share one close: each ends
    the key phase without the missing site, and the round publishes the others' mean."""
    round_id = _open(federation, secagg_phase_seconds=phase_seconds)
    sites, updates, present = Sites(federation, round_id), _updates(), SITES[:4]
    sites.advertise(present)
    close(federation, round_id)
    info = federation.admin.get_round(round_id)
    assert (info.state, info.secagg_phase) == (RoundState.open, Phase.share), info.reason
    (event,) = federation.admin.audit(action="round.secagg_phase")
    assert event.actor.startswith(actor) and event.details["sites"] == 4
    sites.share(present)
    sites.upload(updates, present)
    sites.unmask(present)
    info = federation.admin.get_round(round_id)
    assert info.state is RoundState.published, info.reason
    assert federation.admin.model_info(info.result_version).contributors == list(present)
    published = _published_delta(federation, round_id)
    np.testing.assert_allclose(published, _weighted_mean(updates, present), atol=2e-6)


@pytest.mark.slow
def test_two_hub_replicas_on_one_database_share_the_round(tmp_path) -> None:
    settings = AggregatorSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN)
    with contextlib.ExitStack() as stack:
        federation = stack.enter_context(contextlib.contextmanager(_federation)(settings))
        replica = stack.enter_context(ThreadedServer(create_app(settings)))
        other = {
            name: stack.enter_context(HubClient(replica.url, token, retries=0))
            for name, token in federation.tokens.items()
        }
        round_id = _open(federation)
        updates = _updates()
        sites = Sites(federation, round_id)
        # Every other site talks to the second replica; no replica keeps protocol state.
        sites.hubs = {n: other[n] if i % 2 else federation.hubs[n] for i, n in enumerate(SITES)}
        sites.advertise()
        sites.share()
        sites.upload(updates)
        sites.unmask()
        info = federation.admin.get_round(round_id)
        assert info.state is RoundState.published, info.reason
        np.testing.assert_allclose(
            _published_delta(federation, round_id), _weighted_mean(updates, SITES), atol=2e-6
        )


@pytest.mark.slow
def test_the_messages_of_old_secure_rounds_are_deleted_after_a_publish(tmp_path) -> None:
    settings = AggregatorSettings(
        data_dir=tmp_path, admin_token=ADMIN_TOKEN, keep_update_versions=1
    )
    with contextlib.contextmanager(_federation)(settings) as federation:
        for base_version in (0, 1):  # round 1 builds version 1, round 2 version 2 on it
            round_id = _open(federation, base_version=base_version)
            sites = Sites(federation, round_id)
            sites.advertise()
            sites.share()
            sites.upload(_updates())
            sites.unmask()
            assert federation.admin.get_round(round_id).state is RoundState.published
        (event,) = federation.admin.audit(action="secagg.pruned")
    assert event.details["rounds"] == [1] and event.details["messages"] == 4 * len(SITES)
    engine = create_engine(federation.database_url)
    with engine.connect() as connection:
        kept = set(connection.scalars(select(SecAggMessage.round_id)))
    engine.dispose()
    assert kept == {2}  # the newest version's round keeps its messages
