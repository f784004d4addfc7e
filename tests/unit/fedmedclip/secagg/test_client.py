import numpy as np
import pytest

from fedmedclip.secagg.client import SecAggClient
from fedmedclip.secagg.errors import ProtocolViolation
from fedmedclip.secagg.messages import UnmaskRequest
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.server import SecAggServer


def shared_round(params: RoundParams):
    server = SecAggServer(params)
    clients = {s: SecAggClient(s, params) for s in params.clients}
    for c in clients.values():
        server.receive_advertise(c.advertise())
    directory = server.close_advertise()
    for c in clients.values():
        server.receive_shares(c.share_keys(directory))
    return clients, server.close_shares()


def test_a_share_replayed_from_another_round_does_not_decrypt(params: RoundParams) -> None:
    clients, inboxes = shared_round(params)
    older = RoundParams(**{**params.model_dump(), "round_id": "round-0"})
    _, old_inboxes = shared_round(older)
    replayed = inboxes["site0"].model_copy(update={"shares": old_inboxes["site0"].shares})
    with pytest.raises(ProtocolViolation, match="fails to decrypt"):
        clients["site0"].masked_input(replayed, np.zeros(params.dimension), 1)


def test_a_site_never_reveals_both_secrets_of_a_neighbour(params: RoundParams) -> None:
    clients, inboxes = shared_round(params)
    client = clients["site0"]
    client.masked_input(inboxes["site0"], np.zeros(params.dimension), 1)
    both = UnmaskRequest(
        round_id=params.round_id, survivors=list(params.clients), dropped=["site1"]
    )
    with pytest.raises(ProtocolViolation, match="both as survivor and as dropped"):
        client.unmask(both)


def test_a_site_refuses_to_unmask_below_the_threshold(params: RoundParams) -> None:
    clients, inboxes = shared_round(params)
    client = clients["site0"]
    client.masked_input(inboxes["site0"], np.zeros(params.dimension), 1)
    few = UnmaskRequest(
        round_id=params.round_id, survivors=["site0", "site1"], dropped=["site2", "site3", "site4"]
    )
    with pytest.raises(ProtocolViolation, match="only 2 survivors"):
        client.unmask(few)


def test_phases_must_come_in_order(params: RoundParams) -> None:
    client = SecAggClient("site0", params)
    with pytest.raises(ProtocolViolation, match="out of order"):
        client.unmask(UnmaskRequest(round_id=params.round_id, survivors=[], dropped=[]))
    client.advertise()
    with pytest.raises(ProtocolViolation, match="out of order"):
        client.advertise()
