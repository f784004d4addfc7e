"""compose.tls.yaml on top of compose.yaml, and the certificates bootstrap.sh issues for it.

The two files are merged as compose merges them (mappings key by key, secrets by their
target, healthcheck commands replaced), then checked like compose.yaml: settings that
exist, files that are mounted secrets, https healthchecks. The certificate script runs for
real, with the local ``fedmedclip`` instead of the image, and its output is checked with
OpenSSL: the files compose.tls.yaml names exist, chain to the CA, name the right hosts and
nodes, and are readable by the containers' user without the CA key leaving its folder.
"""

from __future__ import annotations

import copy
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.deploy.helpers import ROOT, settings_env_names
from tests.deploy.test_compose import (
    BOOTSTRAP,
    SITES,
    _env_by_command,
    _provided,
    _python_snippet,
    _secret_targets,
    bootstrap_env,
    interpolate,
    load_compose,
    our_services,
)

pytestmark = pytest.mark.slow

OVERRIDE = ROOT / "compose.tls.yaml"
ISSUE = ROOT / "deploy" / "compose" / "issue-certificates.sh"
TLS_DIR = "./var/compose/secrets/tls/"
# Settings whose value is a file the service opens: it must be a secret the service mounts.
FILE_SETTINGS = ("SSL_CERTFILE", "SSL_KEYFILE", "CLIENT_CA", "CA_BUNDLE", "CLIENT_CERTFILE")
FILE_SETTINGS += ("CLIENT_KEYFILE",)
HUB_CALLERS = ("node", "worker", "worker_gpu", "inference")


def _target(entry: str | dict) -> str:
    return entry if isinstance(entry, str) else entry.get("target", entry["source"])


def merge(base: object, override: object, key: str = "") -> object:
    """Compose's merge of an override file: mappings merged, secrets by target, and
    ``command`` and ``healthcheck.test`` replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if key == "secrets" and isinstance(base, list) and isinstance(override, list):
        by_target = {_target(entry): entry for entry in base}
        by_target.update({_target(entry): entry for entry in override})
        return list(by_target.values())
    return copy.deepcopy(override)


def load_tls() -> dict:
    return merge(load_compose(), yaml.safe_load(OVERRIDE.read_text()))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = load_tls()
    return interpolate(raw, bootstrap_env(raw))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def test_the_override_changes_only_existing_services() -> None:
    override = yaml.safe_load(OVERRIDE.read_text())
    assert set(override["services"]) <= set(load_compose()["services"])
    assert set(load_tls()["services"]) == set(load_compose()["services"])


def test_environment_names_exist_in_the_settings_classes(services: dict[str, dict]) -> None:
    for command, names in _env_by_command(services).items():
        known, required = settings_env_names(command)
        assert names <= known, f"{command}: no such setting: {sorted(names - known)}"
        assert required <= _provided(names), command


def test_every_file_setting_names_a_mounted_certificate(compose: dict) -> None:
    declared = compose["secrets"]
    checked = 0
    for name, service in our_services(compose["services"]).items():
        mounted = _secret_targets(service)
        for key, value in service["environment"].items():
            if not key.endswith(FILE_SETTINGS):
                continue
            assert value in mounted, f"{name}.{key}={value} is not a secret it mounts"
            source = mounted[value]
            assert declared[source]["file"].startswith(TLS_DIR), (name, key, source)
            checked += 1
    # The hub 3; per site its node API and inference API 5 each, each worker 3.
    assert checked == 3 + len(SITES) * (5 + 5 + 3 + 3)


def test_every_api_serves_https_and_checks_it(services: dict[str, dict]) -> None:
    prefixes = {"aggregator": "FEDMEDCLIP_AGG_", "node": "FEDMEDCLIP_NODE_"}
    prefixes["inference"] = "FEDMEDCLIP_INFERENCE_"
    serving = 0
    for name, service in our_services(services).items():
        command = service["command"]
        if "serve" not in command:
            continue
        serving += 1
        env = service["environment"]
        prefix = prefixes[command[0]]
        assert env[prefix + "SSL_CERTFILE"] and env[prefix + "SSL_KEYFILE"], name
        port = command[command.index("--port") + 1]
        code = _python_snippet(service["healthcheck"]["test"])
        assert f"https://127.0.0.1:{port}/health" in code, name
        assert "cafile='/run/secrets/federation_ca'" in code, name
        assert "/run/secrets/federation_ca" in _secret_targets(service), name
    assert serving == 1 + 2 * 2


def test_the_hub_asks_nodes_for_certificates_of_the_federation_ca(
    services: dict[str, dict],
) -> None:
    hub = services["aggregator"]
    mounted = _secret_targets(hub)
    assert mounted[hub["environment"]["FEDMEDCLIP_AGG_CLIENT_CA"]] == "federation_ca"
    # The migrations serve nothing and keep compose.yaml's settings.
    assert not any("SSL" in key for key in services["migrate"]["environment"])


@pytest.mark.parametrize("site", SITES)
def test_site_processes_reach_the_hub_over_mutual_tls(services: dict[str, dict], site: str) -> None:
    for role in HUB_CALLERS:
        service = services[f"{site}_{role}"]
        prefix = "FEDMEDCLIP_INFERENCE_" if role == "inference" else "FEDMEDCLIP_NODE_"
        env, mounted = service["environment"], _secret_targets(service)
        assert env[prefix + "AGGREGATOR_URL"] == "https://aggregator:8100", role
        assert mounted[env[prefix + "CA_BUNDLE"]] == "federation_ca", role
        # Its own site's client certificate: the hub binds it to the site's node name.
        assert mounted[env[prefix + "CLIENT_CERTFILE"]] == f"{site}_client_cert", role
        assert mounted[env[prefix + "CLIENT_KEYFILE"]] == f"{site}_client_key", role
        # The tokens of compose.yaml are still mounted (secrets merged, not replaced).
        assert "/run/secrets/node_token" in mounted, role
    worker = services[f"{site}_worker"]
    assert not any("SSL" in key for key in worker["environment"]), "a worker serves nothing"
    assert set(_secret_targets(worker)) == {
        "/run/secrets/node_token",
        "/run/secrets/admin_token",
        "/run/secrets/federation_ca",
        "/run/secrets/client_cert",
        "/run/secrets/client_key",
    }


def test_the_gpu_workers_keep_their_device(services: dict[str, dict]) -> None:
    for site in SITES:
        gpu, cpu = services[f"{site}_worker_gpu"], services[f"{site}_worker"]
        assert gpu["environment"]["FEDMEDCLIP_NODE_DEVICE"] == "cuda"
        assert {k: v for k, v in gpu["environment"].items() if k != "FEDMEDCLIP_NODE_DEVICE"} == {
            k: v for k, v in cpu["environment"].items() if k != "FEDMEDCLIP_NODE_DEVICE"
        }


def test_bootstrap_runs_the_tls_variant_when_asked() -> None:
    script = BOOTSTRAP.read_text()
    assert 'env_ensure COMPOSE_FILE "compose.yaml:compose.tls.yaml"' in script
    assert 'bash "${repo_root}/deploy/compose/issue-certificates.sh"' in script
    assert 'cafile="/run/secrets/federation_ca"' in script


# ---- the certificates ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository-like folder after issue-certificates.sh ran (twice: it must be idempotent)."""
    root = tmp_path_factory.mktemp("compose")
    env = {
        **os.environ,
        "FEDMEDCLIP_PKI_DIR": str(root / "var/compose/pki"),
        "FEDMEDCLIP_TLS_DIR": str(root / TLS_DIR),
        "FEDMEDCLIP_CLI": f"{sys.executable} -m services.cli",
        "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}",
    }
    for _ in range(2):
        result = subprocess.run(
            ["bash", str(ISSUE)], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
    return root


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _files(issued: Path) -> dict[str, Path]:
    declared = yaml.safe_load(OVERRIDE.read_text())["secrets"]
    return {name: issued / secret["file"] for name, secret in declared.items()}


def test_every_declared_certificate_file_is_issued_and_readable(issued: Path) -> None:
    files = _files(issued)
    assert len(files) == 3 + 4 * len(SITES)
    for name, path in files.items():
        assert path.is_file(), f"{name}: {path} was not issued"
        # The containers run as uid 10001: readable by others (in a folder only you enter).
        assert path.stat().st_mode & stat.S_IROTH, name
    ca_key = issued / "var/compose/pki/ca.key"
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600
    assert not list((issued / TLS_DIR).rglob("ca.key")), "the CA key is never a secret"


def test_certificates_chain_to_the_ca_and_name_their_holders(issued: Path) -> None:
    files = _files(issued)
    ca = files["federation_ca"]
    hub = _load(files["hub_tls_cert"])
    hub_names = hub.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "aggregator" in hub_names.get_values_for_type(x509.DNSName)  # the nodes' hub URL
    assert {str(ip) for ip in hub_names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    for site in SITES:
        client = _load(files[f"{site}_client_cert"])
        (common_name,) = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert common_name.value == site  # bootstrap.sh registers the site under this name
        usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    # Every pair loads, and OpenSSL verifies it against the CA (a server-side context with
    # the CA as its trust store checks each certificate as a peer would).
    for stem in ("hub_tls", *(f"{site}_{kind}" for site in SITES for kind in ("tls", "client"))):
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(files[f"{stem}_cert"], files[f"{stem}_key"])
        issuer = _load(files[f"{stem}_cert"]).issuer
        assert issuer == _load(ca).subject, stem


def test_issuing_again_keeps_the_certificates(issued: Path) -> None:
    """Certificates that exist are not issued again (running it is safe at every start)."""
    files = _files(issued)
    before = {name: path.read_bytes() for name, path in files.items()}
    env = {
        **os.environ,
        "FEDMEDCLIP_PKI_DIR": str(issued / "var/compose/pki"),
        "FEDMEDCLIP_TLS_DIR": str(issued / TLS_DIR),
        "FEDMEDCLIP_CLI": "false",  # any pki call would fail the script
    }
    result = subprocess.run(["bash", str(ISSUE)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert {name: path.read_bytes() for name, path in files.items()} == before
