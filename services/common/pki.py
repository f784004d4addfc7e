"""The federation's small PKI: a CA, server certificates and node client certificates.

Built on the ``cryptography`` library (no hand-written crypto). Keys are ECDSA P-256:
small, fast, and accepted by every TLS stack a hospital runs. Node certificates carry the
node's name as their common name and a ``clientAuth`` extended key usage; the hub binds a
node token to the certificate that first used it (see ``docs/security.md``), so a token
presented with another node's certificate is refused.

Lifetimes are short by default (90 days for leaf certificates) and set per issue; the CA
lives 5 years. Private keys are written with mode 0600, certificates 0644.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_LEAF_DAYS = 90
DEFAULT_CA_DAYS = 5 * 365
_CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates start a little in the past, so a peer whose clock lags still accepts them."""


class PkiError(RuntimeError):
    """A PKI operation cannot be done; the message says what to fix."""


@dataclass(frozen=True)
class Issued:
    """Paths of a certificate and its private key just written."""

    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_ca(
    directory: Path, name: str, *, days: int = DEFAULT_CA_DAYS, force: bool = False
) -> Issued:
    """Create the federation CA in ``directory`` (refuses to overwrite one unless ``force``)."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise PkiError(f"a CA already exists in {directory}; pass --force to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, _cert_pem(cert))
    return Issued(cert_path, key_path)


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in ``directory``; a clear error when missing or broken."""
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as exc:
        raise PkiError(f"no CA in {directory} (run `fedmedclip pki init` first)") from exc
    except ValueError as exc:
        raise PkiError(f"the CA in {directory} cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"the CA key in {directory} is not an EC key")
    return cert, key


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _issue(
    directory: Path,
    out_dir: Path,
    stem: str,
    common_name: str,
    usage: x509.ObjectIdentifier,
    days: int,
    hosts: list[str],
) -> Issued:
    if days < 1:
        raise PkiError("a certificate must live at least one day")
    ca_cert, ca_key = load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(out_dir / f"{stem}.crt", out_dir / f"{stem}.key")
    _write_private(issued.key, _key_pem(key))
    _write_public(issued.cert, _cert_pem(cert))
    return issued


def issue_server(
    directory: Path, hosts: list[str], *, out_dir: Path | None = None, days: int = DEFAULT_LEAF_DAYS
) -> Issued:
    """A server certificate for ``hosts`` (DNS names or IP addresses), signed by the CA."""
    if not hosts:
        raise PkiError("name at least one host (--host) the server is reached by")
    return _issue(
        directory,
        out_dir or directory,
        hosts[0],
        hosts[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        days,
        hosts,
    )


def issue_node(
    directory: Path, node_name: str, *, out_dir: Path | None = None, days: int = DEFAULT_LEAF_DAYS
) -> Issued:
    """A client certificate for the hub node ``node_name`` (its common name)."""
    if not node_name.strip() or "/" in node_name:
        raise PkiError("the node name must be non-empty and contain no '/'")
    return _issue(
        directory,
        out_dir or directory,
        node_name,
        node_name,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        days,
        [],
    )


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator checks about a certificate."""

    path: Path
    subject: str
    issuer: str
    not_after: dt.datetime
    days_left: float
    fingerprint_sha256: str
    hosts: list[str]


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of the DER certificate, lower-case hex (what the hub binds)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def inspect_certificate(path: Path) -> CertificateInfo:
    """Subject, issuer, expiry and fingerprint of the PEM certificate at ``path``."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path} is not a readable PEM certificate: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        hosts = []
    not_after = cert.not_valid_after_utc
    return CertificateInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=not_after,
        days_left=(not_after - _now()).total_seconds() / 86400,
        fingerprint_sha256=fingerprint(cert),
        hosts=hosts,
    )


def common_name(pem: str) -> str | None:
    """The subject common name of a PEM certificate (None when it has none or is not PEM)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
