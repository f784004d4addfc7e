"""HTTPS and mutual TLS with certificates from ``fedmedclip pki``: real handshakes on loopback.

A tiny app echoes the client certificate the server layer handed it, so these tests check
exactly what the services get: the verified certificate or nothing.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request

from services.common.pki import init_ca, issue_node, issue_server, load_ca
from services.common.serving import ServerTls, TlsConfigError, client_cert_pem, server_tls
from tests.support.processes import ThreadedServer


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, str | None]:
        pem = client_cert_pem(request.scope)
        if pem is None:
            return {"cn": None}
        cert = x509.load_pem_x509_certificate(pem.encode())
        return {"cn": cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value}

    return app


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root / "ca", "test federation CA")
    issue_server(root / "ca", ["localhost", "127.0.0.1"], out_dir=root / "server")
    issue_node(root / "ca", "site-a", out_dir=root / "nodes")
    init_ca(root / "rogue", "another CA")
    issue_node(root / "rogue", "site-a", out_dir=root / "rogue-nodes")
    return root


def _expired_node_cert(pki: Path) -> tuple[Path, Path]:
    """A node certificate from the right CA that expired yesterday."""
    ca_cert, ca_key = load_ca(pki / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-a")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    crt, pem_key = pki / "expired.crt", pki / "expired.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem_key


@pytest.fixture(scope="module")
def mtls_server(pki: Path) -> Iterator[ThreadedServer]:
    tls = server_tls(
        pki / "server" / "localhost.crt",
        pki / "server" / "localhost.key",
        pki / "ca" / "ca.crt",
        require_client_cert=True,
    )
    with ThreadedServer(_echo_app(), tls=tls) as server:
        yield server


def _get(server: ThreadedServer, verify: Path, cert: tuple[Path, Path] | None) -> httpx.Response:
    context = ssl.create_default_context(cafile=verify)
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(f"https://localhost:{server.port}/whoami")


def test_a_node_certificate_from_the_federation_ca_reaches_the_app(pki: Path, mtls_server) -> None:
    node = (pki / "nodes" / "site-a.crt", pki / "nodes" / "site-a.key")
    response = _get(mtls_server, pki / "ca" / "ca.crt", node)
    assert response.status_code == 200
    assert response.json() == {"cn": "site-a"}


@pytest.mark.parametrize("which", ["missing", "other CA", "expired"])
def test_bad_client_certificates_fail_the_handshake(pki: Path, mtls_server, which: str) -> None:
    cert = {
        "missing": None,
        "other CA": (pki / "rogue-nodes" / "site-a.crt", pki / "rogue-nodes" / "site-a.key"),
        "expired": _expired_node_cert(pki),
    }[which]
    with pytest.raises(httpx.HTTPError):  # the handshake or the first read fails
        _get(mtls_server, pki / "ca" / "ca.crt", cert)


def test_a_client_refuses_a_server_outside_its_ca_bundle(pki: Path, mtls_server) -> None:
    node = (pki / "nodes" / "site-a.crt", pki / "nodes" / "site-a.key")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(mtls_server, pki / "rogue" / "ca.crt", node)


def test_https_without_a_client_ca_serves_anyone_over_tls(pki: Path) -> None:
    tls = server_tls(pki / "server" / "localhost.crt", pki / "server" / "localhost.key")
    with ThreadedServer(_echo_app(), tls=tls) as server:
        assert server.url.startswith("https://")
        assert _get(server, pki / "ca" / "ca.crt", None).json() == {"cn": None}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/whoami", timeout=5).raise_for_status()


def test_bad_certificate_files_give_a_clear_error(pki: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="not found"):
        server_tls(tmp_path / "missing.crt", pki / "server" / "localhost.key")
    with pytest.raises(TlsConfigError, match="cannot use the TLS certificate"):
        server_tls(garbage, pki / "server" / "localhost.key")
    with pytest.raises(TlsConfigError, match="cannot use the TLS certificate"):  # key of another
        server_tls(pki / "server" / "localhost.crt", pki / "nodes" / "site-a.key")
    with pytest.raises(TlsConfigError, match="both"):
        server_tls(pki / "server" / "localhost.crt", None)
    with pytest.raises(TlsConfigError, match="client CA"):
        ServerTls(
            pki / "server" / "localhost.crt", pki / "server" / "localhost.key", garbage
        ).check()
