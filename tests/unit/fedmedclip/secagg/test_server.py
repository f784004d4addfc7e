import numpy as np
import pytest
from scipy import stats

from fedmedclip.secagg.client import SecAggClient
from fedmedclip.secagg.errors import ProtocolViolation, RoundFailed
from fedmedclip.secagg.messages import MaskedInput, Phase, UnmaskRequest
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.server import SecAggServer


def through_upload(params: RoundParams, values: dict[str, np.ndarray]):
    server = SecAggServer(params)
    clients = {s: SecAggClient(s, params) for s in params.clients}
    for c in clients.values():
        server.receive_advertise(c.advertise())
    directory = server.close_advertise()
    for c in clients.values():
        server.receive_shares(c.share_keys(directory))
    inboxes = server.close_shares()
    uploads = {s: c.masked_input(inboxes[s], values[s], 1) for s, c in clients.items()}
    return server, clients, uploads


def server_request(server: SecAggServer, uploads: dict[str, MaskedInput]) -> UnmaskRequest:
    """The unmask request a hub would send, built without closing ``server``'s phase."""
    del server
    return UnmaskRequest(
        round_id=next(iter(uploads.values())).round_id, survivors=sorted(uploads), dropped=[]
    )


def test_a_stored_masked_payload_is_independent_of_its_update() -> None:
    params = RoundParams.create("r", [f"s{i}" for i in range(5)], 20_000)
    rng = np.random.default_rng(1)
    update = rng.normal(scale=2.0, size=params.dimension)
    zeros = {s: np.zeros(params.dimension) for s in params.clients}
    _, _, with_update = through_upload(params, {**zeros, "s0": update})
    _, _, with_zero = through_upload(params, zeros)
    for uploads in (with_update, with_zero):
        masked = np.frombuffer(uploads["s0"].masked, dtype="<u4").astype(np.float64)
        # Uniform on the ring: the top byte of each value is uniform on 0..255 ...
        counts = np.bincount((masked // 2**24).astype(int), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4
        # ... and the payload carries no linear trace of the update.
        assert abs(np.corrcoef(masked[:-1], update)[0, 1]) < 5 / np.sqrt(params.dimension)
    a = np.frombuffer(with_update["s0"].masked, dtype="<u4")
    b = np.frombuffer(with_zero["s0"].masked, dtype="<u4")
    assert stats.ks_2samp(a, b).pvalue > 1e-4


def test_messages_from_another_round_are_refused_as_replays(params: RoundParams) -> None:
    other = RoundParams(**{**params.model_dump(), "round_id": "round-0"})
    server = SecAggServer(params)
    with pytest.raises(ProtocolViolation, match="replayed or misrouted"):
        server.receive_advertise(SecAggClient("site0", other).advertise())


def test_a_repeated_message_is_refused(params: RoundParams) -> None:
    server = SecAggServer(params)
    message = SecAggClient("site0", params).advertise()
    server.receive_advertise(message)
    with pytest.raises(ProtocolViolation, match="repeated"):
        server.receive_advertise(message)


def test_wrong_phase_messages_are_refused(params: RoundParams) -> None:
    server = SecAggServer(params)
    early = MaskedInput(round_id=params.round_id, client_id="site0", masked=b"\0" * 4)
    with pytest.raises(ProtocolViolation, match="phase advertise"):
        server.receive_masked(early)
    server, clients, uploads = through_upload(
        params, {s: np.zeros(params.dimension) for s in params.clients}
    )
    with pytest.raises(ProtocolViolation, match="phase upload"):
        server.receive_advertise(SecAggClient("site0", params).advertise())
    with pytest.raises(ProtocolViolation, match="phase upload"):
        server.receive_unmask(clients["site0"].unmask(server_request(server, uploads)))


def test_uploads_of_the_wrong_size_or_from_outsiders_are_refused(params: RoundParams) -> None:
    server, _, uploads = through_upload(
        params, {s: np.zeros(params.dimension) for s in params.clients}
    )
    with pytest.raises(ProtocolViolation, match="bytes, expected"):
        server.receive_masked(uploads["site0"].model_copy(update={"masked": b"\0" * 8}))
    with pytest.raises(ProtocolViolation, match="may not send"):
        server.receive_masked(uploads["site0"].model_copy(update={"client_id": "intruder"}))


def test_a_failed_round_refuses_everything_after(params: RoundParams) -> None:
    server, clients, uploads = through_upload(
        params, {s: np.zeros(params.dimension) for s in params.clients}
    )
    for s in params.clients[:2]:
        server.receive_masked(uploads[s])
    with pytest.raises(RoundFailed, match="only 2 sites uploaded"):
        server.close_upload()
    assert server.phase == Phase.failed and "threshold is 3" in (server.failure or "")
    with pytest.raises(ProtocolViolation, match="phase failed"):
        server.receive_masked(uploads[params.clients[3]])
