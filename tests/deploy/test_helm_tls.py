"""Transport security and sign-on in the Helm charts: HTTPS, mutual TLS, cert-manager, the
split hub Ingresses, OIDC, and the extra volumes a hospital adds.

Rendered by a real helm (the cases and helpers of test_helm.py, where every object of the
TLS cases is also validated strictly). A setting is checked by where it ends up: a
``..._CERTFILE`` variable must name a file that a volume of the pod really provides, from
the Secret or ConfigMap the values name; OIDC variables must make valid settings.
"""

from __future__ import annotations

import inspect
import re
import ssl
from pathlib import Path

import pytest

from services.aggregator.settings import AggregatorSettings
from services.common import hub_client
from services.common.pki import init_ca
from services.hospital_node.settings import NodeSettings
from services.inference_api.settings import InferenceSettings
from tests.deploy.test_helm import (
    EXTRA_ENV,
    EXTRA_MOUNT,
    EXTRA_VOLUME,
    HUB,
    NAMESPACE,
    SITE,
    WORKLOAD_KINDS,
    all_containers,
    by_kind,
    component,
    pod_spec,
    render,
    workload,
)
from tests.deploy.test_helm_operations import env_of, refused, template

pytestmark = pytest.mark.slow

# What the charts mount where (docs/deployment.md, "Transport security").
SERVER_CERT, SERVER_KEY = "/etc/fedmedclip/tls/tls.crt", "/etc/fedmedclip/tls/tls.key"


def file_source(spec: dict, container: dict, path: str) -> tuple[str, str, str]:
    """(kind, name, key) of the Secret or ConfigMap key that provides ``path`` in the container.

    Fails when no mount of the container covers the path, or its volume does not map a key to
    that file: the service would find no file there.
    """
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = volumes[mount["name"]]
        for kind, name_key in (("secret", "secretName"), ("configMap", "name")):
            if kind in volume:
                source = volume[kind]
                items = {item["path"]: item["key"] for item in source.get("items", [])}
                relative = path.removeprefix(prefix)
                assert relative in items, f"{path}: volume {mount['name']} maps {items}"
                assert mount.get("readOnly") is True, f"{path} is mounted writable"
                return kind, source[name_key], items[relative]
    raise AssertionError(f"{container['name']}: nothing is mounted at {path}")


def node_paths() -> set[str]:
    """Every hub path a hospital node or inference API calls (HubClient, not HubAdminClient),
    with path parameters filled in."""
    source = inspect.getsource(hub_client.HubClient)
    templates = set(re.findall(r'f?"(/api/v1/[^"]*)"', source))
    assert len(templates) >= 5, templates
    return {re.sub(r"\{[^}]+\}", "7", path) for path in templates} | {"/api/v1/models/production"}


def routed(ingress: dict, path: str) -> bool:
    """Whether the Ingress sends ``path`` to a backend (Prefix matches whole segments)."""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and path == entry["path"]:
                return True
            if entry["pathType"] == "Prefix":
                prefix = entry["path"].rstrip("/")
                if path == prefix or path.startswith(prefix + "/"):
                    return True
    return False


def ingresses(docs: list[dict]) -> dict[str, dict]:
    return {component(doc): doc for doc in by_kind(docs, "Ingress")}


# ---- the hub -------------------------------------------------------------------------------


def test_hub_serves_https_from_its_tls_secret_and_probes_follow(helm: str) -> None:
    docs = render(helm, "hub-tls")
    spec = pod_spec(workload(docs, "aggregator"))
    server = spec["containers"][0]
    env = env_of(server)
    assert env["FEDMEDCLIP_AGG_SSL_CERTFILE"]["value"] == SERVER_CERT
    assert env["FEDMEDCLIP_AGG_SSL_KEYFILE"]["value"] == SERVER_KEY
    assert file_source(spec, server, SERVER_CERT) == ("secret", "hub-tls", "tls.crt")
    assert file_source(spec, server, SERVER_KEY) == ("secret", "hub-tls", "tls.key")
    (port,) = server["ports"]
    assert port["name"] == "https"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["scheme"] == "HTTPS", probe
        assert server[probe]["httpGet"]["port"] == "https", probe
    (service,) = [s for s in by_kind(docs, "Service") if component(s) == "aggregator"]
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("https", "https")]
    # The migrations serve nothing: no HTTPS settings there.
    migrations = [c for c in all_containers(spec) if c["name"] == "migrate"]
    migrations += pod_spec(workload(docs, "migrations"))["containers"]
    for container in migrations:
        assert not {n for n in env_of(container) if "SSL" in n or "CLIENT_CA" in n}
    # Control: plain HTTP by default.
    default = pod_spec(workload(render(helm, "hub-bundled-postgres"), "aggregator"))
    (plain,) = default["containers"]
    assert "FEDMEDCLIP_AGG_SSL_CERTFILE" not in env_of(plain)
    assert plain["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("hub-tls", ("secret", "federation-ca", "ca.crt")),
        ("hub-cert-manager", ("configMap", "federation-ca", "federation.pem")),
    ],
)
def test_hub_mutual_tls_mounts_the_client_ca(helm: str, case: str, expected: tuple) -> None:
    spec = pod_spec(workload(render(helm, case), "aggregator"))
    (server,) = spec["containers"]
    path = env_of(server)["FEDMEDCLIP_AGG_CLIENT_CA"]["value"]
    assert file_source(spec, server, path) == expected


def test_hub_mutual_tls_without_https_is_refused(helm: str) -> None:
    error = refused(helm, HUB, "--set", "tls.caBundle.existingSecret=federation-ca")
    assert "tls.caBundle (mutual TLS for nodes) needs the aggregator to serve HTTPS" in error
    twice = refused(
        helm, HUB, "--set", "tls.existingSecret=hub-tls",
        "--set", "tls.caBundle.existingSecret=a", "--set", "tls.caBundle.existingConfigMap=b",
    )  # fmt: skip
    assert "give the client CA once" in twice


def test_hub_client_ca_given_as_pem_is_a_loadable_config_map(helm: str, tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "pki", "Test federation CA").cert
    docs = template(
        helm, HUB, "--set", "tls.existingSecret=hub-tls", "--set-file", f"tls.caBundle.pem={ca}"
    )
    (config_map,) = by_kind(docs, "ConfigMap")
    spec = pod_spec(workload(docs, "aggregator"))
    (server,) = spec["containers"]
    kind, name, key = file_source(spec, server, env_of(server)["FEDMEDCLIP_AGG_CLIENT_CA"]["value"])
    assert (kind, name) == ("configMap", config_map["metadata"]["name"])
    written = tmp_path / "from-the-chart.crt"
    written.write_text(config_map["data"][key])
    assert written.read_text().strip() == ca.read_text().strip()
    ssl.create_default_context(cafile=str(written))  # a CA that OpenSSL loads, not mangled


def test_hub_certificate_from_cert_manager(helm: str) -> None:
    docs = render(helm, "hub-cert-manager")
    (certificate,) = by_kind(docs, "Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    spec = certificate["spec"]
    pod = pod_spec(workload(docs, "aggregator"))
    (server,) = pod["containers"]
    # cert-manager writes the very Secret the pod mounts.
    assert file_source(pod, server, SERVER_CERT) == ("secret", spec["secretName"], "tls.crt")
    (service,) = [s for s in by_kind(docs, "Service") if component(s) == "aggregator"]
    name = service["metadata"]["name"]
    assert {name, f"{name}.{NAMESPACE}.svc", "hub.fedmedclip.example"} <= set(spec["dnsNames"])
    assert spec["issuerRef"] == {
        "name": "federation-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "server auth" in spec["usages"] and spec["duration"] and spec["renewBefore"]
    assert not by_kind(render(helm, "hub-tls"), "Certificate")
    error = refused(helm, HUB, "--set", "tls.certManager.enabled=true")
    assert "tls.certManager.issuerRef.name is required" in error


def test_hub_node_ingress_routes_what_nodes_call_and_nothing_else(helm: str) -> None:
    docs = render(helm, "hub-tls")
    doors = ingresses(docs)
    assert set(doors) == {"node-ingress", "admin-ingress"}
    node, admin = doors["node-ingress"], doors["admin-ingress"]
    called = node_paths()
    assert "/api/v1/rounds/7/updates" in called and "/api/v1/models/7/blob" in called
    missing = {path for path in called if not routed(node, path)}
    assert not missing, f"nodes could not reach {missing}"
    for private in ("/metrics", "/docs", "/openapi.json", "/redoc", "/health", "/ready"):
        assert not routed(node, private), private
    for admin_only in ("/api/v1/nodes", "/api/v1/nodes/7", "/api/v1/audit"):
        assert not routed(node, admin_only), admin_only
    for path in ("/api/v1/nodes", "/api/v1/audit", "/docs", "/docs/assets/swagger-ui.css"):
        assert routed(admin, path), path
    assert not routed(admin, "/metrics")
    hosts = {d: [r["host"] for r in doors[d]["spec"]["rules"]] for d in doors}
    assert hosts == {
        "node-ingress": ["hub.fedmedclip.example"],
        "admin-ingress": ["hub-admin.fedmedclip.internal"],
    }
    # Both send traffic to the aggregator's port, which is https here.
    (service,) = [s for s in by_kind(docs, "Service") if component(s) == "aggregator"]
    for door in doors.values():
        for rule in door["spec"]["rules"]:
            for entry in rule["http"]["paths"]:
                backend = entry["backend"]["service"]
                assert backend == {"name": service["metadata"]["name"], "port": {"name": "https"}}


def test_hub_admin_ingress_is_optional(helm: str) -> None:
    docs = template(helm, HUB, "--set", "ingress.enabled=true")
    assert set(ingresses(docs)) == {"node-ingress"}


def test_hub_oidc_values_make_valid_settings(helm: str) -> None:
    (server,) = pod_spec(workload(render(helm, "hub-tls"), "aggregator"))["containers"]
    values = {
        name.removeprefix("FEDMEDCLIP_AGG_").lower(): env["value"]
        for name, env in env_of(server).items()
        if name.startswith("FEDMEDCLIP_AGG_OIDC_")
    }
    oidc = AggregatorSettings(**values).oidc_config()
    assert oidc is not None
    assert oidc.issuer == "https://idp.example/realms/fed"
    assert oidc.audience == "fedmedclip-hub"
    assert oidc.role_claim == "realm_access.roles"
    assert oidc.role_map == {"fed-operators": "admin"}
    error = refused(helm, HUB, "--set", "oidc.issuer=https://idp.example")
    assert "oidc.audience is required with oidc.issuer" in error


def test_hub_tls_monitoring_and_helm_test_use_https(helm: str) -> None:
    docs = render(helm, "hub-tls")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "https" and endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    verified = template(
        helm, HUB, "--set", "tls.existingSecret=hub-tls",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set-json", 'metrics.serviceMonitor.tlsConfig={"serverName":"fm-fedmedclip-hub"}',
    )  # fmt: skip
    (monitor,) = by_kind(verified, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["tlsConfig"] == {"serverName": "fm-fedmedclip-hub"}
    (pod,) = by_kind(docs, "Pod")
    assert pod["spec"]["containers"][0]["command"][3].startswith("https://fm-fedmedclip-hub:")


# ---- a site --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("node-api", "FEDMEDCLIP_NODE_"),
        ("worker", "FEDMEDCLIP_NODE_"),
        ("inference", "FEDMEDCLIP_INFERENCE_"),
    ],
)
def test_site_processes_verify_the_hub_and_present_the_node_certificate(
    helm: str, name: str, prefix: str
) -> None:
    spec = pod_spec(workload(render(helm, "site-tls"), name))
    (container,) = spec["containers"]
    env = env_of(container)
    expected = {
        "CA_BUNDLE": ("configMap", "federation-ca", "ca.crt"),
        "CLIENT_CERTFILE": ("secret", "hospital-a-client", "tls.crt"),
        "CLIENT_KEYFILE": ("secret", "hospital-a-client", "tls.key"),
    }
    for setting, source in expected.items():
        assert file_source(spec, container, env[prefix + setting]["value"]) == source, setting


def test_inference_without_the_hub_gets_no_client_key(helm: str) -> None:
    docs = template(
        helm, SITE, "--set", "tls.clientCertificate.existingSecret=hospital-a-client",
        "--set", "inference.followHub=false", "--set", "hub.url=https://hub.example",
        "--set", "auth.nodeToken=t",
    )  # fmt: skip
    spec = pod_spec(workload(docs, "inference"))
    assert not any("CLIENT" in name for name in env_of(spec["containers"][0]))
    assert "client-tls" not in {volume["name"] for volume in spec["volumes"]}
    assert "client-tls" in {v["name"] for v in pod_spec(workload(docs, "node-api"))["volumes"]}


def test_site_apis_serve_https(helm: str) -> None:
    docs = render(helm, "site-tls")
    expected_secrets = {"node-api": "node-api-tls", "inference": "fm-fedmedclip-site-inference-tls"}
    prefixes = {"node-api": "FEDMEDCLIP_NODE_", "inference": "FEDMEDCLIP_INFERENCE_"}
    for name, secret in expected_secrets.items():
        spec = pod_spec(workload(docs, name))
        (container,) = spec["containers"]
        env = env_of(container)
        assert env[prefixes[name] + "SSL_CERTFILE"]["value"] == SERVER_CERT
        assert file_source(spec, container, SERVER_CERT) == ("secret", secret, "tls.crt")
        assert file_source(spec, container, SERVER_KEY) == ("secret", secret, "tls.key")
        assert container["ports"][0]["name"] == "https"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["scheme"] == "HTTPS", (name, probe)
    assert "FEDMEDCLIP_NODE_SSL_CERTFILE" not in env_of(
        pod_spec(workload(docs, "worker"))["containers"][0]
    ), "the worker serves nothing"
    (certificate,) = by_kind(docs, "Certificate")
    assert certificate["spec"]["secretName"] == expected_secrets["inference"]
    assert "inference.hospital-a.example" in certificate["spec"]["dnsNames"]
    assert f"fm-fedmedclip-site-inference.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == "hospital-ca"
    for service in by_kind(docs, "Service"):
        if component(service) in expected_secrets:
            assert service["spec"]["ports"][0]["targetPort"] == "https"
    for monitor in by_kind(docs, "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["scheme"]) == ("https", "https")
    (pod,) = by_kind(docs, "Pod")
    urls = pod["spec"]["containers"][0]["command"][3:]
    assert urls and all(url.startswith("https://") for url in urls)


def test_site_oidc_values_make_valid_settings(helm: str) -> None:
    docs = render(helm, "site-tls")

    def oidc_values(name: str, prefix: str) -> dict[str, str]:
        return {
            key.removeprefix(prefix).lower(): env["value"]
            for key, env in env_of(pod_spec(workload(docs, name))["containers"][0]).items()
            if key.startswith(prefix + "OIDC_")
        }

    node = NodeSettings(**oidc_values("node-api", "FEDMEDCLIP_NODE_")).oidc_config()
    inference = InferenceSettings(
        clinician_tokens=["c"], **oidc_values("inference", "FEDMEDCLIP_INFERENCE_")
    ).oidc_config()
    assert node is not None and inference is not None
    assert (node.audience, node.role_map) == ("fedmedclip-node", {"site-it": "admin"})
    assert inference.audience == "fedmedclip-inference"
    assert inference.role_map == {"radiology": "clinician", "pacs-admins": "admin"}
    assert node.issuer == inference.issuer == "https://sso.hospital-a.example"
    assert not oidc_values("worker", "FEDMEDCLIP_NODE_"), "the worker serves nobody"
    error = refused(
        helm, SITE, "--set", "oidc.issuer=https://sso", "--set", "oidc.jwksUrl=https://sso/k"
    )
    assert "node.oidc.audience is required with oidc.issuer" in error


def test_site_hub_ca_given_once(helm: str) -> None:
    error = refused(
        helm, SITE, "--set", "tls.caBundle.pem=-----BEGIN CERTIFICATE-----",
        "--set", "tls.caBundle.existingSecret=ca",
    )  # fmt: skip
    assert "give the hub's CA once" in error


# ---- both ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["hub-tls", "site-tls"])
def test_extra_volumes_mounts_and_env_reach_every_fedmedclip_workload(helm: str, case: str) -> None:
    docs = render(helm, case)
    seen = set()
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc)
        for container in all_containers(spec):
            if not container["image"].startswith("fedmedclip:"):
                continue
            seen.add(component(doc))
            assert EXTRA_VOLUME in spec["volumes"], component(doc)
            assert EXTRA_MOUNT in container["volumeMounts"], container["name"]
            role = "worker" if component(doc) == "worker" else container["args"][0]
            assert EXTRA_ENV[role] in container["env"], container["name"]
    expected = (
        {"aggregator", "migrations"} if case == "hub-tls" else {"node-api", "worker", "inference"}
    )
    assert seen == expected


@pytest.mark.parametrize(
    ("chart", "value"),
    [(HUB, "tls.existingSecret=other-tls"), (SITE, "tls.clientCertificate.existingSecret=x")],
)
def test_a_tls_change_restarts_the_pods(helm: str, chart: Path, value: str) -> None:
    def checksums(*args: str) -> dict[str, str]:
        return {
            component(doc): doc["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]
            for doc in by_kind(template(helm, chart, *args), "Deployment")
            if "checksum/tls" in doc["spec"]["template"]["metadata"]["annotations"]
        }

    before, after = checksums(), checksums("--set", value)
    assert before and set(before) == set(after)
    assert all(before[name] != after[name] for name in before)
