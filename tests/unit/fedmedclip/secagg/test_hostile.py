"""A malicious participant against the library: what it sends is refused at intake, and an
honest site that meets it anyway goes on without it."""

import numpy as np
import pytest

from fedmedclip.secagg import crypto
from fedmedclip.secagg.client import SecAggClient
from fedmedclip.secagg.errors import ProtocolViolation, RoundFailed
from fedmedclip.secagg.messages import AdvertiseKeys, KeyDirectory, Phase
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.server import SecAggServer
from tests.support.secagg import shifted

from .conftest import make_updates, weighted_mean

P = 2**255 - 19
SMALL_ORDER_KEYS = {
    "zero": bytes(32),
    "one": (1).to_bytes(32, "little"),
    "order 8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "p - 1": (P - 1).to_bytes(32, "little"),
    "p (zero, non-canonical)": P.to_bytes(32, "little"),
    "p + 1 (one, non-canonical)": (P + 1).to_bytes(32, "little"),
}
"""Points of order 1, 2, 4 or 8 on Curve25519 and non-canonical encodings of them."""


@pytest.mark.parametrize("raw", SMALL_ORDER_KEYS.values(), ids=SMALL_ORDER_KEYS.keys())
@pytest.mark.parametrize("field", ["cipher_key", "mask_key"])
def test_a_small_order_key_is_refused_at_advertisement(
    params: RoundParams, field: str, raw: bytes
) -> None:
    server = SecAggServer(params)
    honest = SecAggClient("site0", params).advertise()
    with pytest.raises(ProtocolViolation, match=f"{field} of 'site0' is not a usable X25519"):
        server.receive_advertise(honest.model_copy(update={field: raw}))
    server.receive_advertise(honest)  # nothing was kept of the refused message


def test_a_fresh_key_passes_the_check() -> None:
    crypto.check_public_key(crypto.public_bytes(crypto.new_private_key()))


def test_an_honest_site_leaves_out_a_neighbour_whose_key_cannot_be_used(
    params: RoundParams,
) -> None:
    """A hub that forwards a liar's zero key: the honest sites exclude the liar at the share
    phase instead of failing, and the round publishes the mean of the other four."""
    liar, honest = params.clients[0], params.clients[1:]
    server = SecAggServer(params)
    clients = {s: SecAggClient(s, params) for s in honest}
    for client in clients.values():
        server.receive_advertise(client.advertise())
    directory = server.close_advertise()
    bad = AdvertiseKeys(
        round_id=params.round_id, client_id=liar, cipher_key=bytes(32), mask_key=bytes(32)
    )
    forwarded = KeyDirectory(round_id=params.round_id, keys={**directory.keys, liar: bad})
    for client in clients.values():
        shares = client.share_keys(forwarded)
        assert liar not in {s.recipient for s in shares.shares}
        server.receive_shares(shares)
    inboxes = server.close_shares()
    updates = make_updates(params)
    for site, client in clients.items():
        server.receive_masked(client.masked_input(inboxes[site], *updates[site]))
    request = server.close_upload()
    for client in clients.values():
        server.receive_unmask(client.unmask(request))
    aggregate = server.finish()
    assert aggregate.survivors == honest
    np.testing.assert_allclose(aggregate.mean(), weighted_mean(updates, honest), atol=2**-12)


def _to_upload(params: RoundParams):
    """A round whose sites all advertised and shared: the server, the clients, the inboxes."""
    server = SecAggServer(params)
    clients = {s: SecAggClient(s, params) for s in params.clients}
    for client in clients.values():
        server.receive_advertise(client.advertise())
    directory = server.close_advertise()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    inboxes = server.close_shares()
    return server, clients, inboxes


def _at_unmask(params: RoundParams, gone: str):
    """A round in its unmask phase where ``gone`` dropped after sharing its keys."""
    server, clients, inboxes = _to_upload(params)
    updates = make_updates(params)
    for site, client in clients.items():
        masked = client.masked_input(inboxes[site], *updates[site])
        if site != gone:
            server.receive_masked(masked)
    request = server.close_upload()
    survivors = [s for s in params.clients if s != gone]
    responses = {s: clients[s].unmask(request) for s in survivors}
    return server, responses, weighted_mean(updates, survivors)


def _extra_seed_shares(response, owner: str, count: int):
    extra = [
        share.model_copy(update={"index": 100 + i, "share": bytes([i % 256]) * 32})
        for i, share in enumerate([s for s in response.seed_shares if s.owner == owner] * count)
    ]
    return {"seed_shares": [*response.seed_shares, *extra]}


def _seed_share_of_the_dropped(response, gone: str):
    """The dropped site's key share, moved to where its seed share would be."""
    (key_share,) = response.key_shares
    assert key_share.owner == gone
    return {"seed_shares": [*response.seed_shares, key_share], "key_shares": []}


def _key_share_of_a_survivor(response, owner: str):
    """A survivor's seed share, moved to where a dropped site's key share would be."""
    moved = [s for s in response.seed_shares if s.owner == owner]
    return {
        "seed_shares": [s for s in response.seed_shares if s.owner != owner],
        "key_shares": [*response.key_shares, *moved],
    }


def _wrong_index(response, owner: str):
    return {
        "seed_shares": [
            s.model_copy(update={"index": s.index % 4 + 1}) if s.owner == owner else s
            for s in response.seed_shares
        ]
    }


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda r: _extra_seed_shares(r, "site1", 400), "revealed 401 shares of 'site1'"),
        (lambda r: _extra_seed_shares(r, "site1", 1), "revealed 2 shares of 'site1'"),
        (lambda r: _seed_share_of_the_dropped(r, "site4"), "seed share of 'site4' was not asked"),
        (lambda r: _key_share_of_a_survivor(r, "site2"), "key share of 'site2' was not asked"),
        (lambda r: _wrong_index(r, "site3"), "seed share of 'site3' from 'site0' has index"),
    ],
    ids=["400 extra", "one extra", "seed of a dropout", "key of a survivor", "wrong index"],
)
def test_shares_the_graph_does_not_allow_are_refused_at_unmask(
    params: RoundParams, tamper, problem: str
) -> None:
    server, responses, expected = _at_unmask(params, gone="site4")
    honest = responses["site0"]
    with pytest.raises(ProtocolViolation, match=problem):
        server.receive_unmask(honest.model_copy(update=tamper(honest)))
    for response in responses.values():  # nothing was kept: the honest answer still counts
        server.receive_unmask(response)
    np.testing.assert_allclose(server.finish().mean(), expected, atol=2**-12)


@pytest.mark.parametrize(
    "recipients",
    [["site1", "site1", "site2", "site3", "site4"], ["site0", "site1", "site2", "site3"]],
    ids=["two to one neighbour", "one to itself"],
)
def test_a_share_message_must_hold_one_share_per_neighbour(
    params: RoundParams, recipients: list[str]
) -> None:
    server = SecAggServer(params)
    clients = {s: SecAggClient(s, params) for s in params.clients}
    for client in clients.values():
        server.receive_advertise(client.advertise())
    honest = clients["site0"].share_keys(server.close_advertise())
    template = honest.shares[0]
    shares = [template.model_copy(update={"recipient": r}) for r in recipients]
    with pytest.raises(ProtocolViolation, match="exactly one share to each neighbour"):
        server.receive_shares(honest.model_copy(update={"shares": shares}))
    server.receive_shares(honest)


def _bounded_round(params: RoundParams, updates, shift: np.ndarray | None = None):
    """A whole round in which ``site0`` adds ``shift`` (fixed-point units) to its upload."""
    server, clients, inboxes = _to_upload(params)
    for site, client in clients.items():
        masked = client.masked_input(inboxes[site], *updates[site])
        if site == "site0" and shift is not None:
            masked = shifted(masked, shift, params.fixed_point)
        server.receive_masked(masked)
    request = server.close_upload()
    for client in clients.values():
        server.receive_unmask(client.unmask(request))
    return server


@pytest.fixture
def bounded() -> RoundParams:
    return RoundParams.create(
        "round-1", [f"site{i}" for i in range(5)], 64, norm_bound=1.0, max_weight=100
    )


def test_honest_sites_clip_to_the_round_bounds_and_the_round_publishes(
    bounded: RoundParams,
) -> None:
    updates = make_updates(bounded)  # norms about 4, weights 5..500
    aggregate = _bounded_round(bounded, updates).finish()
    clipped = {
        s: (v / max(1.0, float(np.linalg.norm(v))), min(w, 100)) for s, (v, w) in updates.items()
    }
    expected = weighted_mean(clipped, bounded.clients)
    np.testing.assert_allclose(aggregate.mean(), expected, atol=2**-12)
    assert aggregate.weight == sum(w for _, w in clipped.values())


def _value_shift(params: RoundParams, value: float, weight: int) -> np.ndarray:
    units = np.full(params.length, np.ldexp(value * weight, params.frac_bits))
    units[-1] = 0
    return units


def _weight_shift(params: RoundParams, delta: int) -> np.ndarray:
    units = np.zeros(params.length)
    units[-1] = delta
    return units


@pytest.mark.parametrize(
    ("shift", "problem"),
    [
        (lambda p: _value_shift(p, 1000.0, 10), r"weighted mean has norm .* above the round's"),
        (lambda p: _weight_shift(p, 2**30 - 10), r"total weight 1073741864 is outside \[5, 500\]"),
        (lambda p: _weight_shift(p, -49), r"total weight 1 is outside \[5, 500\]"),
    ],
    ids=["values of 1000", "weight 2^30", "weight -39"],
)
def test_an_aggregate_outside_the_bounds_fails_the_round(
    bounded: RoundParams, shift, problem: str
) -> None:
    rng = np.random.default_rng(0)
    updates = {s: (rng.normal(scale=0.01, size=bounded.dimension), 10) for s in bounded.clients}
    server = _bounded_round(bounded, updates, shift(bounded))
    with pytest.raises(RoundFailed, match=problem):
        server.finish()
    assert server.phase == Phase.failed and "no honest site sends" in (server.failure or "")


def test_an_honest_site_refuses_a_weight_below_one_under_a_cap(bounded: RoundParams) -> None:
    """The hub's lower bound (the survivors' count) holds only if every honest weight is
    at least 1."""
    server = SecAggServer(bounded)
    clients = {s: SecAggClient(s, bounded) for s in bounded.clients}
    for client in clients.values():
        server.receive_advertise(client.advertise())
    directory = server.close_advertise()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    inbox = server.close_shares()["site0"]
    with pytest.raises(ValueError, match="weight must be at least 1"):
        clients["site0"].masked_input(inbox, np.zeros(bounded.dimension), 0)
