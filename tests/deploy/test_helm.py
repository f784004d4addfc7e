"""The Helm charts in deploy/k8s, rendered by a real helm and validated offline.

Every rendered object is validated in strict mode (unknown fields rejected) against the
Kubernetes API schemas shipped by kubernetes-validate, then checked for the properties a
hospital's platform team expects: probes, resources, a locked-down securityContext, Helm
labels, GPU scheduling, and NetworkPolicies that admit what they must and nothing else.
The operations features (storage, observability, secrets, chart conventions) are checked in
test_helm_operations.py on the cases defined here.
"""

from __future__ import annotations

import copy
import json
import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fedmedclip.privacy import DPConfig
from services.hospital_node.settings import NodeSettings
from tests.deploy.helpers import ROOT, service_of, settings_env_names

pytestmark = pytest.mark.slow

HUB = ROOT / "deploy" / "k8s" / "fedmedclip-hub"
SITE = ROOT / "deploy" / "k8s" / "fedmedclip-site"
HUB_EXTERNAL_VALUES = HUB / "values-external-db.yaml"
SITE_GPU_VALUES = SITE / "values-gpu.yaml"

# The oldest Kubernetes the charts support (Chart.yaml kubeVersion is >=1.27; 1.29 is the
# oldest schema set shipped in strict form here) and a current one.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
NAMESPACE = "fedmedclip-test"
DIGEST = "sha256:" + "ab" * 32
# What the extraVolumes/extraVolumeMounts/extraEnv values of the TLS cases add to every
# FedMedCLIP workload (a hospital proxy's CA, say).
EXTRA_VOLUME = {"name": "proxy-ca", "configMap": {"name": "proxy-ca"}}
EXTRA_MOUNT = {"name": "proxy-ca", "mountPath": "/etc/proxy-ca", "readOnly": True}
EXTRA_ENV = {
    "aggregator": {"name": "FEDMEDCLIP_AGG_LOG_LEVEL", "value": "DEBUG"},
    "node": {"name": "FEDMEDCLIP_NODE_LOG_LEVEL", "value": "DEBUG"},
    "worker": {"name": "FEDMEDCLIP_NODE_LOG_LEVEL", "value": "DEBUG"},
    "inference": {"name": "FEDMEDCLIP_INFERENCE_LOG_LEVEL", "value": "DEBUG"},
}

# name -> (chart, helm arguments)
CASES: dict[str, tuple[Path, tuple[str, ...]]] = {
    "hub-bundled-postgres": (HUB, ()),
    "hub-external-existing-secret": (HUB, ("-f", str(HUB_EXTERNAL_VALUES))),
    "hub-external-url": (
        HUB,
        (
            "--set",
            "postgresql.enabled=false",
            "--set",
            "externalDatabase.url=postgresql+psycopg://fedmedclip:pw@db.example:5432/fedmedclip",
            "--set",
            "auth.existingSecret=hub-admin",
            "--set",
            "backup.enabled=true",
            "--set",
            "backup.persistence.existingClaim=hub-backups",
        ),
    ),
    "site-cpu": (SITE, ()),
    "site-gpu": (SITE, ("-f", str(SITE_GPU_VALUES), "--set", "auth.nodeToken=node-token-1")),
    "site-hub-without-token": (SITE, ("--set", "hub.url=https://hub.example")),
    # Everything optional turned on: monitoring, autoscaling, digests, PostgreSQL on RWX.
    "hub-operations": (
        HUB,
        (
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
            "--set",
            f"image.digest={DIGEST}",
            "--set",
            f"postgresql.image.digest={DIGEST}",
            "--set",
            "aggregator.replicaCount=2",
            "--set",
            "backup.enabled=true",
        ),
    ),
    "site-operations": (
        SITE,
        (
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
            "--set",
            "inference.autoscaling.enabled=true",
            "--set",
            f"image.digest={DIGEST}",
            "--set",
            f"redis.image.digest={DIGEST}",
            "--set",
            "database.url=postgresql+psycopg://site:pw@db.example:5432/site",
            "--set-json",
            'persistence.data.accessModes=["ReadWriteMany"]',
            "--set-json",
            'persistence.modelStore.accessModes=["ReadWriteMany"]',
            "--set-json",
            'inference.audit.persistence.accessModes=["ReadWriteMany"]',
            "--set",
            "auth.nodeToken=node-token-1",
        ),
    ),
    # GitOps: nothing generated, every secret given.
    "hub-gitops": (
        HUB,
        (
            "--set",
            "generateSecrets=false",
            "--set",
            "auth.adminToken=admin-token-1",
            "--set",
            "postgresql.auth.password=pg-password-1",
        ),
    ),
    "site-gitops": (
        SITE,
        (
            "--set",
            "generateSecrets=false",
            "--set",
            "auth.nodeToken=node-token-1",
            "--set",
            "auth.adminToken=admin-token-1",
            "--set",
            "auth.clinicianTokens={clin-1,clin-2}",
            "--set",
            "redis.auth.password=redis-password-1",
        ),
    ),
    # Transport security and sign-on (test_helm_tls.py): HTTPS from existing Secrets, mutual
    # TLS, both Ingresses, OIDC, extra volumes, monitoring over HTTPS.
    "hub-tls": (
        HUB,
        (
            "--set", "tls.existingSecret=hub-tls",
            "--set", "tls.caBundle.existingSecret=federation-ca",
            "--set", "ingress.enabled=true",
            "--set", "ingress.admin.enabled=true",
            "--set", "oidc.issuer=https://idp.example/realms/fed",
            "--set", "oidc.audience=fedmedclip-hub",
            "--set", "oidc.jwksUrl=https://idp.example/realms/fed/certs",
            "--set", "oidc.roleClaim=realm_access.roles",
            "--set-json", 'oidc.roleMap={"fed-operators":"admin"}',
            "--set", "metrics.serviceMonitor.enabled=true",
            "--set-json", f"aggregator.extraVolumes={json.dumps([EXTRA_VOLUME])}",
            "--set-json", f"aggregator.extraVolumeMounts={json.dumps([EXTRA_MOUNT])}",
            "--set-json", f"aggregator.extraEnv={json.dumps([EXTRA_ENV['aggregator']])}",
        ),
    ),
    # cert-manager issues the hub's certificate; the client CA comes from a ConfigMap.
    "hub-cert-manager": (
        HUB,
        (
            "--set", "tls.certManager.enabled=true",
            "--set", "tls.certManager.issuerRef.name=federation-ca",
            "--set", "tls.certManager.issuerRef.kind=ClusterIssuer",
            "--set", "tls.certManager.dnsNames={hub.fedmedclip.example}",
            "--set", "tls.caBundle.existingConfigMap=federation-ca",
            "--set", "tls.caBundle.key=federation.pem",
        ),
    ),
    "site-tls": (
        SITE,
        (
            "--set", "hub.url=https://hub.fedmedclip.example",
            "--set", "auth.nodeToken=node-token-1",
            "--set", "tls.caBundle.existingConfigMap=federation-ca",
            "--set", "tls.clientCertificate.existingSecret=hospital-a-client",
            "--set", "node.tls.existingSecret=node-api-tls",
            "--set", "inference.tls.certManager=true",
            "--set", "inference.tls.dnsNames={inference.hospital-a.example}",
            "--set", "tls.certManager.issuerRef.name=hospital-ca",
            "--set", "oidc.issuer=https://sso.hospital-a.example",
            "--set", "oidc.jwksUrl=https://sso.hospital-a.example/jwks",
            "--set", "node.oidc.audience=fedmedclip-node",
            "--set-json", 'node.oidc.roleMap={"site-it":"admin"}',
            "--set", "inference.oidc.audience=fedmedclip-inference",
            "--set-json", 'inference.oidc.roleMap={"radiology":"clinician","pacs-admins":"admin"}',
            "--set", "metrics.serviceMonitor.enabled=true",
            *(
                arg
                for name in ("node", "worker", "inference")
                for arg in (
                    "--set-json", f"{name}.extraVolumes={json.dumps([EXTRA_VOLUME])}",
                    "--set-json", f"{name}.extraVolumeMounts={json.dumps([EXTRA_MOUNT])}",
                    "--set-json", f"{name}.extraEnv={json.dumps([EXTRA_ENV[name]])}",
                )
            ),
        ),
    ),
}  # fmt: skip
HUB_CASES = [name for name, (chart, _) in CASES.items() if chart == HUB]
SITE_CASES = [name for name, (chart, _) in CASES.items() if chart == SITE]

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}
# Custom resources that kubernetes-validate has no schema for; their rendering is checked
# in test_helm_operations.py and test_helm_tls.py.
NOT_IN_THE_KUBERNETES_SCHEMAS = {"ServiceMonitor", "Certificate"}
# Containers that run no FedMedCLIP HTTP server and are probed by exec instead.
EXEC_PROBED = {"postgresql", "redis", "worker"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


@cache
def _render(helm: str, case: str) -> tuple[dict, ...]:
    chart, args = CASES[case]
    result = run_helm(helm, "template", "fm", str(chart), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, f"helm template {case} failed:\n{result.stderr}"
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert docs, f"helm template {case} rendered nothing"
    return docs


def render(helm: str, case: str) -> list[dict]:
    """Rendered objects of one case (a deep copy: tests may not disturb each other)."""
    return copy.deepcopy(list(_render(helm, case)))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def workload(docs: list[dict], component_name: str) -> dict:
    found = [
        doc for doc in docs if doc["kind"] in WORKLOAD_KINDS and component(doc) == component_name
    ]
    assert len(found) == 1, f"expected one {component_name} workload, found {len(found)}"
    return found[0]


def pod_template(doc: dict) -> dict:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else pod_template(doc)["spec"]


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


# ---- lint and schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        (HUB, None),
        (HUB, HUB_EXTERNAL_VALUES),
        (SITE, None),
        (SITE, SITE_GPU_VALUES),
    ],
    ids=["hub-default", "hub-external-db", "site-default", "site-gpu"],
)
def test_helm_lint_strict(helm: str, chart: Path, values: Path | None) -> None:
    args = ["lint", "--strict", str(chart)]
    if values is not None:
        args += ["-f", str(values)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("chart", "typo"),
    [
        (HUB, "postgresql.persistance.size=1Gi"),
        (HUB, "aggregatr.replicaCount=2"),
        (SITE, "worker.gpu.enabeld=true"),
        (SITE, "networkPolicy.hub.ipBlock[0]=10.0.0.1/32"),
    ],
)
def test_values_schema_rejects_misspelt_keys(helm: str, chart: Path, typo: str) -> None:
    result = run_helm(helm, "template", "fm", str(chart), "--set", typo)
    assert result.returncode != 0, f"--set {typo} was accepted"
    assert "additional properties" in result.stderr


def test_external_database_needs_a_url(helm: str) -> None:
    result = run_helm(helm, "template", "fm", str(HUB), "--set", "postgresql.enabled=false")
    assert result.returncode != 0
    assert "externalDatabase.url or externalDatabase.existingSecret is required" in result.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_notes_render(helm: str, case: str) -> None:
    chart, args = CASES[case]
    result = run_helm(
        helm, "install", "fm", str(chart), "--dry-run=client", "--namespace", NAMESPACE, *args
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)
    assert len(notes) == 2 and "FedMedCLIP" in notes[1]


# ---- Kubernetes API validation -----------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_manifests_validate_strictly(helm: str, case: str, version: str) -> None:
    failures = []
    for doc in render(helm, case):
        if doc["kind"] in NOT_IN_THE_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            failures.append(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {error.message}")
    assert not failures, "\n".join(failures)


def test_strict_validation_catches_an_unknown_field(helm: str) -> None:
    """Control: the validator really rejects a misplaced field in a rendered object."""
    deployment = copy.deepcopy(by_kind(render(helm, "site-cpu"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# ---- workloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_long_running_containers_have_health_and_ready_probes(helm: str, case: str) -> None:
    for doc in by_kind(render(helm, case), "Deployment") + by_kind(
        render(helm, case), "StatefulSet"
    ):
        for container in pod_spec(doc)["containers"]:
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            liveness, readiness = container.get("livenessProbe"), container.get("readinessProbe")
            assert liveness and readiness, f"{where} lacks a liveness or readiness probe"
            if container["name"] in EXEC_PROBED:
                assert "exec" in liveness and "exec" in readiness, where
                continue
            assert liveness["httpGet"]["path"] == "/health", where
            # The inference API is ready when alive and serving what it has: /ready waits
            # for a model, which a new site has only after its first round.
            ready_path = "/health" if container["name"] == "inference" else "/ready"
            assert readiness["httpGet"]["path"] == ready_path, where
            port_names = {port["name"] for port in container["ports"]}
            assert liveness["httpGet"]["port"] in port_names, where
            assert readiness["httpGet"]["port"] in port_names, where


@pytest.mark.parametrize("case", list(CASES))
def test_every_container_has_requests_limits_and_a_locked_down_security_context(
    helm: str, case: str
) -> None:
    for doc in render(helm, case):
        if doc["kind"] not in WORKLOAD_KINDS | {"Pod"}:
            continue
        spec = pod_spec(doc)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in all_containers(spec):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            resources = container["resources"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(section, {})), (
                    f"{where} lacks {section}"
                )
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security["seccompProfile"]["type"] == "RuntimeDefault", where
            if container["image"].startswith("fedmedclip"):
                assert security["runAsUser"] == 10001, where
                assert pod_security["runAsUser"] == 10001, where
            # The root filesystem is read-only, so /tmp must be a writable volume.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{where} has no writable /tmp"
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


@pytest.mark.parametrize("case", list(CASES))
def test_objects_carry_the_helm_labels(helm: str, case: str) -> None:
    for doc in render(helm, case):
        labels = doc["metadata"]["labels"]
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "fm"
        assert doc["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("case", list(CASES))
def test_selectors_and_services_match_their_pods(helm: str, case: str) -> None:
    docs = render(helm, case)
    pods = [
        (doc, doc["spec"]["template"])
        for doc in docs
        if doc["kind"] in {"Deployment", "StatefulSet"}
    ]
    for doc, template in pods:
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
    for service in by_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        targets = [
            template
            for _, template in pods
            if selector.items() <= template["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)}"
        port_names = {
            port["name"]
            for container in targets[0]["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def _secret_keys(docs: list[dict]) -> dict[str, set[str]]:
    return {secret["metadata"]["name"]: set(secret["data"]) for secret in by_kind(docs, "Secret")}


def _secret_refs(docs: list[dict]) -> list[tuple[str, str, bool]]:
    refs = []
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in all_containers(pod_spec(doc)):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((ref["name"], ref["key"], ref.get("optional", False)))
    return refs


@pytest.mark.parametrize("case", list(CASES))
def test_secret_references_resolve(helm: str, case: str) -> None:
    docs = render(helm, case)
    secrets = _secret_keys(docs)
    # Secrets the values say exist already (existingSecret) are not ours to check.
    existing = {"hub-admin", "fedmedclip-hub-db", "fedmedclip-site-db"}
    unresolved = {
        (name, key)
        for name, key, optional in _secret_refs(docs)
        if name not in existing and not optional and key not in secrets.get(name, set())
    }
    if case in {"site-cpu", "site-hub-without-token"}:
        # Without auth.nodeToken the node waits for one (NOTES.txt says so); nothing else
        # may be missing.
        assert {key for _, key in unresolved} == {"node-token"}
    else:
        assert not unresolved


# ---- hub -----------------------------------------------------------------------------------


def _hooks(doc: dict) -> set[str]:
    return set(doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))


def test_hub_bundled_postgres_is_a_statefulset_with_storage(helm: str) -> None:
    docs = render(helm, "hub-bundled-postgres")
    (statefulset,) = by_kind(docs, "StatefulSet")
    image = statefulset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("postgres:15."), image
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    services = {service["metadata"]["name"] for service in by_kind(docs, "Service")}
    assert statefulset["spec"]["serviceName"] in services
    aggregator = workload(docs, "aggregator")
    url = next(
        env["value"]
        for env in pod_spec(aggregator)["containers"][0]["env"]
        if env["name"] == "FEDMEDCLIP_AGG_DATABASE_URL"
    )
    assert url.startswith("postgresql+psycopg://") and "$(DATABASE_PASSWORD)" in url
    host = url.split("@", 1)[1].split(":", 1)[0]
    assert host in services
    # Only the aggregator and the migrations may talk to the database (backups are off).
    (policy,) = by_kind(docs, "NetworkPolicy")
    allowed = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
    assert {labels["app.kubernetes.io/component"] for labels in allowed} == {
        "aggregator",
        "migrations",
    }


@pytest.mark.parametrize("case", ["hub-external-existing-secret", "hub-external-url"])
def test_hub_external_database_has_no_bundled_postgres(helm: str, case: str) -> None:
    docs = render(helm, case)
    assert not by_kind(docs, "StatefulSet")
    assert not any("postgresql" in s["metadata"]["name"] for s in by_kind(docs, "Service"))
    env = {e["name"]: e for e in pod_spec(workload(docs, "aggregator"))["containers"][0]["env"]}
    assert "secretKeyRef" in env["FEDMEDCLIP_AGG_DATABASE_URL"]["valueFrom"]


@pytest.mark.parametrize("case", HUB_CASES)
def test_hub_migrations_run_as_a_hook_job_after_the_secret(helm: str, case: str) -> None:
    docs = render(helm, case)
    job = workload(docs, "migrations")
    assert job["kind"] == "Job"
    assert pod_spec(job)["containers"][0]["args"] == ["aggregator", "migrate"]
    bundled = not case.startswith("hub-external")
    # The bundled database does not exist before the first install, so there the first
    # migration runs in the aggregator's init container.
    assert _hooks(job) == ({"pre-upgrade"} if bundled else {"pre-install", "pre-upgrade"})
    init = pod_spec(workload(docs, "aggregator")).get("initContainers", [])
    assert [c["args"] for c in init] == ([["aggregator", "migrate"]] if bundled else [])
    job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for secret in by_kind(docs, "Secret"):
        assert _hooks(secret) >= _hooks(job)
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight


def test_hub_ingress_routes_to_the_aggregator(helm: str) -> None:
    docs = render(helm, "hub-external-existing-secret")
    (ingress,) = by_kind(docs, "Ingress")
    (service,) = [s for s in by_kind(docs, "Service") if component(s) == "aggregator"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert ingress["spec"]["tls"]
    assert not by_kind(render(helm, "hub-bundled-postgres"), "Ingress")


# ---- site ----------------------------------------------------------------------------------


def test_site_gpu_worker_requests_a_gpu_on_gpu_nodes(helm: str) -> None:
    docs = render(helm, "site-gpu")
    gpu_values = yaml.safe_load(SITE_GPU_VALUES.read_text())["worker"]
    worker = workload(docs, "worker")
    spec = pod_spec(worker)
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FEDMEDCLIP_NODE_DEVICE"] == "cuda"
    assert spec["nodeSelector"] == gpu_values["nodeSelector"]
    assert spec["tolerations"] == gpu_values["tolerations"]
    # Nothing else takes a GPU.
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS and doc is not worker:
            for other in all_containers(pod_spec(doc)):
                assert "nvidia.com/gpu" not in other["resources"].get("limits", {})


def test_site_default_worker_runs_on_cpu(helm: str) -> None:
    spec = pod_spec(workload(render(helm, "site-cpu"), "worker"))
    (container,) = spec["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert not container["image"].endswith("-cuda")
    assert "nodeSelector" not in spec and "tolerations" not in spec


@pytest.mark.parametrize("case", SITE_CASES)
def test_site_volumes_are_shared_as_intended(helm: str, case: str) -> None:
    docs = render(helm, case)
    claims = {claim["metadata"]["name"] for claim in by_kind(docs, "PersistentVolumeClaim")}

    def claim_mounts(component_name: str) -> dict[str, tuple[str, bool]]:
        spec = pod_spec(workload(docs, component_name))
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {}
        for mount in spec["containers"][0]["volumeMounts"]:
            pvc = volumes[mount["name"]].get("persistentVolumeClaim")
            if pvc:
                mounts[mount["mountPath"]] = (pvc["claimName"], mount.get("readOnly", False))
        return mounts

    node, worker, inference = (claim_mounts(c) for c in ("node-api", "worker", "inference"))
    store = "/var/lib/fedmedclip/model-store"
    data = "/var/lib/fedmedclip/node"
    assert node[data] == worker[data] == (node[data][0], False)
    assert node[store] == worker[store] == (node[store][0], False)
    assert inference[store] == (node[store][0], True), "inference reads the model store only"
    assert data not in inference
    audit = "/var/lib/fedmedclip/inference"
    assert inference[audit][1] is False, "the audit log is written"
    assert {node[data][0], node[store][0], inference[audit][0]} <= claims
    audit_path = next(
        env["value"]
        for env in pod_spec(workload(docs, "inference"))["containers"][0]["env"]
        if env["name"] == "FEDMEDCLIP_INFERENCE_AUDIT_PATH"
    )
    assert audit_path.startswith(audit + "/") and "$(POD_NAME)" in audit_path


def _policies(docs: list[dict]) -> dict[str, dict]:
    return {component(p): p for p in by_kind(docs, "NetworkPolicy")}


def _ingress(policies: dict[str, dict], name: str) -> list[dict]:
    return policies[name]["spec"]["ingress"]


def _peer_components(rule: dict, key: str) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "")
        for peer in rule.get(key, [])
        if "podSelector" in peer and "namespaceSelector" not in peer
    }


@pytest.mark.parametrize("case", SITE_CASES)
def test_site_network_policies(helm: str, case: str) -> None:
    docs = render(helm, case)
    chart, args = CASES[case]
    values = yaml.safe_load((chart / "values.yaml").read_text())["networkPolicy"]
    if case == "site-gpu":
        values["hub"].update(yaml.safe_load(SITE_GPU_VALUES.read_text())["networkPolicy"]["hub"])
    policies = _policies(docs)
    assert set(policies) == {"inference", "node-api", "worker", "redis"}

    # Every pod of the site is under a policy that governs both directions.
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            policy = policies[component(doc)]
            assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
                doc["spec"]["template"]["metadata"]["labels"].items()
            )
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}

    # Inbound: the inference API from the hospital's namespaces; both APIs from the monitoring
    # namespace and the release's test pod; nothing else. The port is the API's own (named
    # http, or https when it serves TLS).
    def api_port(name: str) -> list[dict]:
        (port,) = pod_spec(workload(docs, name))["containers"][0]["ports"]
        return [{"port": port["name"], "protocol": "TCP"}]

    rule, *extras = policies["inference"]["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == values["inference"]["namespaceSelector"]
    assert rule["ports"] == api_port("inference")
    namespace = values["metrics"]["namespace"]
    for name, api_extras in (("inference", extras), ("node-api", _ingress(policies, "node-api"))):
        monitoring, test_pod = api_extras
        assert monitoring == {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
            ],
            "ports": api_port(name),
        }
        assert _peer_components(test_pod, "from") == {"test"}
        assert test_pod["ports"] == api_port(name)
    assert policies["worker"]["spec"]["ingress"] == []
    (redis_rule,) = policies["redis"]["spec"]["ingress"]
    assert _peer_components(redis_rule, "from") == {"node-api", "worker"}
    assert policies["redis"]["spec"]["egress"] == []

    # Outbound: DNS, the hub and (node and workers) Redis, nothing else.
    hub_ports = [{"port": port, "protocol": "TCP"} for port in values["hub"]["ports"]]
    for name in ("node-api", "worker", "inference"):
        egress = policies[name]["spec"]["egress"]
        dns = [rule for rule in egress if {"port": 53, "protocol": "UDP"} in rule["ports"]]
        assert len(dns) == 1
        assert dns[0]["to"][0]["namespaceSelector"] == values["dns"]["namespaceSelector"]
        hub = [rule for rule in egress if any("ipBlock" in peer for peer in rule["to"])]
        if values["hub"]["ipBlocks"]:
            assert len(hub) == 1
            assert [p["ipBlock"]["cidr"] for p in hub[0]["to"]] == values["hub"]["ipBlocks"]
            assert hub[0]["ports"] == hub_ports
        else:
            assert not hub
        to_redis = [rule for rule in egress if _peer_components(rule, "to") == {"redis"}]
        assert len(to_redis) == (0 if name == "inference" else 1)
        assert len(egress) == len(dns) + len(hub) + len(to_redis), f"{name}: extra egress"


# ---- environment variables -----------------------------------------------------------------


def _env_by_service(docs: list[dict]) -> dict[str, set[str]]:
    """FEDMEDCLIP_* names set per service (by the container's fedmedclip sub-command)."""
    found: dict[str, set[str]] = {}
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in all_containers(pod_spec(doc)):
            service = (container.get("args") or [""])[0]
            names = {
                env["name"]
                for env in container.get("env", [])
                if env["name"].startswith("FEDMEDCLIP_")
            }
            if container["image"].startswith("fedmedclip:"):
                assert service in {"aggregator", "node", "inference"}, container["args"]
                found.setdefault(service, set()).update(names)
            else:
                assert not names, f"{container['name']} is not ours but sets {names}"
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_env_names_match_their_service(helm: str, case: str) -> None:
    for service, names in _env_by_service(render(helm, case)).items():
        assert names, f"{service} sets no FEDMEDCLIP_* variable"
        wrong = {name for name in names if service_of(name) != service}
        assert not wrong, f"{service} containers set another service's variables: {wrong}"


@pytest.mark.parametrize("case", ["site-cpu", "site-gpu", "site-hub-without-token"])
def test_inference_follows_the_hub_only_with_a_token(helm: str, case: str) -> None:
    """InferenceSettings refuses an aggregator URL without a token; never render that."""
    container = pod_spec(workload(render(helm, case), "inference"))["containers"][0]
    names = {env["name"] for env in container["env"]}
    follows = "FEDMEDCLIP_INFERENCE_AGGREGATOR_URL" in names
    assert follows == ("FEDMEDCLIP_INFERENCE_NODE_TOKEN" in names)
    assert follows == (case == "site-gpu")


@pytest.mark.parametrize("case", list(CASES))
def test_env_names_exist_in_the_settings_classes(helm: str, case: str) -> None:
    for service, names in _env_by_service(render(helm, case)).items():
        known, required = settings_env_names(service)
        assert names <= known, f"{service}: no such setting: {sorted(names - known)}"
        assert required <= names, f"{service}: required settings not set: {required - names}"


def _dp_settings(container: dict) -> NodeSettings:
    """NodeSettings built from the container's FEDMEDCLIP_NODE_DP_* variables only."""
    values = {
        e["name"].removeprefix("FEDMEDCLIP_NODE_").lower(): e["value"]
        for e in container["env"]
        if e["name"].startswith("FEDMEDCLIP_NODE_DP_")
    }
    assert len(values) == 4, values
    return NodeSettings(**values)


def test_site_privacy_values_reach_node_and_worker_as_valid_settings(helm: str) -> None:
    privacy = '{"clipNorm":0.5,"noiseMultiplier":4,"delta":1e-6,"maxEpsilon":8}'
    result = run_helm(
        helm, "template", "fm", str(SITE), "--namespace", NAMESPACE, "--set-json",
        f"privacy={privacy}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for name in ("node-api", "worker"):
        (container,) = pod_spec(workload(docs, name))["containers"]
        settings = _dp_settings(container)
        assert settings.dp_config() == DPConfig(clip_norm=0.5, noise_multiplier=4, delta=1e-6)
        assert settings.dp_max_epsilon == 8
    (default,) = pod_spec(workload(render(helm, "site-cpu"), "worker"))["containers"]
    assert _dp_settings(default).dp_config() is None
