"""A hospital node completes a round with a hub that requires mutual TLS.

The PKI is made by ``services.common.pki`` (what ``fedmedclip pki`` runs); the hub serves
HTTPS and asks for client certificates from the federation CA; the node verifies the hub
against that CA and presents its own certificate. Real handshakes on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedmedclip.data.synth import SynthSummary
from services.aggregator.app import create_app as create_hub
from services.aggregator.settings import AggregatorSettings
from services.common.hub_client import HubClient, HubRejected
from services.common.pki import init_ca, issue_node, issue_server
from services.common.serving import client_tls
from tests.integration.node.conftest import HUB_ADMIN, SITE_ADMIN, Hub
from tests.support.processes import ThreadedServer

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    init_ca(root, "federation CA")
    issue_server(root, ["localhost", "127.0.0.1"])
    issue_node(root, "hospital-a")
    issue_node(root, "hospital-b")
    return root


@pytest.fixture
def mtls_hub(tmp_path: Path, pki: Path, federation: SynthSummary) -> Iterator[Hub]:
    settings = AggregatorSettings(
        data_dir=tmp_path / "hub",
        admin_token=HUB_ADMIN,
        ssl_certfile=pki / "localhost.crt",
        ssl_keyfile=pki / "localhost.key",
        client_ca=pki / "ca.crt",
    )
    with ThreadedServer(create_hub(settings), tls=settings.server_tls()) as server:
        hub = Hub(server)
        hub.url = f"https://localhost:{server.port}"
        # The admin has no client certificate: the handshake only asks for one.
        hub.http = httpx.Client(
            base_url=hub.url,
            headers={"Authorization": f"Bearer {HUB_ADMIN}"},
            verify=client_tls(pki / "ca.crt"),
            timeout=30,
        )
        hub.set_task(federation.class_names)
        yield hub
        hub.http.close()


def _node_client(hub: Hub, pki: Path, token: str, cert: str | None) -> HubClient:
    files = (pki / f"{cert}.crt", pki / f"{cert}.key") if cert else (None, None)
    return HubClient(hub.url, token, retries=0, verify=client_tls(pki / "ca.crt", *files))


@pytest.mark.slow
def test_a_node_completes_a_round_over_mutual_tls(
    mtls_hub: Hub, pki: Path, federation: SynthSummary, tmp_path: Path, feature_cache, run_node
) -> None:
    from services.hospital_node.settings import NodeSettings

    settings = NodeSettings(
        aggregator_url=mtls_hub.url,
        node_token=mtls_hub.add_node("hospital-a"),
        admin_token=SITE_ADMIN,
        data_roots=[federation.root],
        data_dir=tmp_path / "hospital-a",
        feature_cache_dir=feature_cache,
        model_store_dir=tmp_path / "hospital-a" / "model_store",
        device="cpu",
        hub_retries=1,
        hub_backoff_seconds=0.05,
        ca_bundle=pki / "ca.crt",
        client_certfile=pki / "hospital-a.crt",
        client_keyfile=pki / "hospital-a.key",
    )
    node = run_node(settings)
    assert node.register(federation.hospital_dirs[0]).status_code == 201
    round_info = mtls_hub.open_round(min_clients=1)
    done = node.wait_terminal(node.start_job()["id"], timeout=180)
    assert done["state"] == "done", done
    assert mtls_hub.round(round_info["id"])["updates_received"] == 1
    closed = mtls_hub.call("POST", f"/api/v1/rounds/{round_info['id']}/close")
    assert closed["state"] == "published"


def test_node_tokens_count_only_with_their_own_certificate(mtls_hub: Hub, pki: Path) -> None:
    token = mtls_hub.add_node("hospital-a")
    with _node_client(mtls_hub, pki, token, "hospital-a") as own:
        assert own.get_task().class_names
    with (
        _node_client(mtls_hub, pki, token, "hospital-b") as other,
        pytest.raises(HubRejected) as refused,
    ):
        other.get_task()
    assert refused.value.status_code == 403
    assert "certificate of 'hospital-b'" in refused.value.detail
    with _node_client(mtls_hub, pki, token, None) as bare, pytest.raises(HubRejected) as missing:
        bare.get_task()
    assert missing.value.status_code == 401
    assert "client certificate" in missing.value.detail
