"""A malicious participant against the library: what it sends is refused at intake, and an
honest site that meets it anyway goes on without it."""

import numpy as np
import pytest

from fedmedclip.secagg import crypto
from fedmedclip.secagg.client import SecAggClient
from fedmedclip.secagg.errors import ProtocolViolation
from fedmedclip.secagg.messages import AdvertiseKeys, KeyDirectory
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.server import SecAggServer

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
