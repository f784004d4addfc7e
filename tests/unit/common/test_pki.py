"""The federation PKI and ``fedmedclip pki``: files, modes, lifetimes, refusals."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from services.cli import app
from services.common.pki import PkiError, init_ca, inspect_certificate, issue_node, issue_server


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_and_leaves_have_private_keys_readable_by_the_owner_only(tmp_path: Path) -> None:
    ca = init_ca(tmp_path, "ca")
    node = issue_node(tmp_path, "site-a", days=7)
    server = issue_server(tmp_path, ["hub.example", "10.0.0.5"])
    for issued in (ca, node, server):
        assert _mode(issued.key) == 0o600
        assert _mode(issued.cert) == 0o644
    node_info = inspect_certificate(node.cert)
    assert node_info.subject == "CN=site-a"
    assert 6.9 < node_info.days_left <= 7.01
    assert inspect_certificate(server.cert).hosts == ["hub.example", "10.0.0.5"]
    usage = x509.load_pem_x509_certificate(node.cert.read_bytes()).extensions
    eku = usage.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="pki init"):
        issue_node(tmp_path, "site-a")
    init_ca(tmp_path, "ca")
    with pytest.raises(PkiError, match="already exists"):
        init_ca(tmp_path, "ca")
    with pytest.raises(PkiError, match="node name"):
        issue_node(tmp_path, "a/b")
    with pytest.raises(PkiError, match="at least one host"):
        issue_server(tmp_path, [])
    with pytest.raises(PkiError, match="not a readable PEM"):
        inspect_certificate(tmp_path / "ca.key")


def test_the_cli_issues_and_inspects(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir = str(tmp_path / "ca")
    assert runner.invoke(app, ["pki", "init", "--dir", ca_dir]).exit_code == 0
    issued = runner.invoke(app, ["pki", "issue-node", "site-b", "--dir", ca_dir, "--days", "30"])
    assert issued.exit_code == 0, issued.output
    shown = runner.invoke(app, ["pki", "inspect", str(tmp_path / "ca" / "site-b.crt")])
    assert shown.exit_code == 0
    assert "CN=site-b" in shown.output and "days left" in shown.output
    again = runner.invoke(app, ["pki", "init", "--dir", ca_dir])
    assert again.exit_code == 2
    assert "already exists" in again.output
