"""Operations features of the Helm charts: durable state, observability, secrets, conventions.

Rendered by a real helm (the cases and helpers of test_helm.py); the objects of every case
are also validated strictly there. Each test renders the values that turn a feature on and
asserts what Kubernetes would do with the result.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.fake_kube_api import fake_kube_api
from tests.deploy.fake_kube_api import secret as fake_secret
from tests.deploy.helpers import ROOT
from tests.deploy.test_helm import (
    CASES,
    DIGEST,
    HUB,
    NAMESPACE,
    SITE,
    SITE_GPU_VALUES,
    WORKLOAD_KINDS,
    by_kind,
    component,
    pod_spec,
    render,
    run_helm,
    workload,
)

pytestmark = pytest.mark.slow

SERVICES = ROOT / "services"
HOSTNAME = "kubernetes.io/hostname"
# Exact releases (15.10, 7.4.2), never a floating major such as "15" or "7".
PINNED_TAG = re.compile(r"^\d+\.\d+(\.\d+)?$")


def template(helm: str, chart: Path, *args: str) -> list[dict]:
    result = run_helm(helm, "template", "fm", str(chart), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def refused(helm: str, chart: Path, *args: str) -> str:
    """helm's error output for values the chart must refuse to render."""
    result = run_helm(helm, "template", "fm", str(chart), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0, f"rendered although it should not: {args}"
    return result.stderr


def env_of(container: dict) -> dict[str, dict]:
    return {env["name"]: env for env in container.get("env", [])}


def selects(selector: dict, doc: dict) -> bool:
    return selector["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()


# ---- durable state -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        # values-gpu.yaml without its PostgreSQL: RWX volumes and SQLite.
        ("-f", str(SITE_GPU_VALUES), "--set", "database.existingSecret="),
        ("--set-json", 'persistence.data.accessModes=["ReadWriteMany"]'),
        ("--set-json", 'persistence.data.accessModes=["ReadWriteOnce","ReadWriteMany"]'),
    ],
    ids=["gpu-example-without-postgres", "rwx", "rwo-and-rwx"],
)
def test_sqlite_on_a_shared_volume_is_refused(helm: str, args: tuple[str, ...]) -> None:
    error = refused(helm, SITE, *args)
    assert "persistence.data is ReadWriteMany" in error
    assert "database.url or database.existingSecret" in error


def test_postgresql_on_a_shared_volume_renders(helm: str) -> None:
    docs = render(helm, "site-operations")
    (secret,) = by_kind(docs, "Secret")
    assert "database-url" in secret["data"]
    for name in ("node-api", "worker"):
        (container,) = pod_spec(workload(docs, name))["containers"]
        ref = env_of(container)["FEDMEDCLIP_NODE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "database-url"}
    # The URL (with its password) is never a plain value in a pod spec.
    assert "db.example" not in json.dumps([d for d in docs if d["kind"] != "Secret"])


def test_node_database_from_an_existing_secret(helm: str) -> None:
    docs = render(helm, "site-gpu")
    gpu_values = yaml.safe_load(SITE_GPU_VALUES.read_text())
    assert "ReadWriteMany" in gpu_values["persistence"]["data"]["accessModes"]
    (container,) = pod_spec(workload(docs, "worker"))["containers"]
    ref = env_of(container)["FEDMEDCLIP_NODE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": gpu_values["database"]["existingSecret"], "key": "database-url"}
    assert "database-url" not in by_kind(docs, "Secret")[0]["data"]


def test_sqlite_by_default(helm: str) -> None:
    for name in ("node-api", "worker"):
        (container,) = pod_spec(workload(render(helm, "site-cpu"), name))["containers"]
        assert "FEDMEDCLIP_NODE_DATABASE_URL" not in env_of(container)


def _colocation_terms(doc: dict) -> list[dict]:
    affinity = pod_spec(doc).get("affinity", {})
    return affinity.get("podAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])


def _is_next_to(term: dict, docs: list[dict], component_name: str) -> bool:
    return term["topologyKey"] == HOSTNAME and selects(
        term["labelSelector"], workload(docs, component_name)
    )


def test_pods_sharing_readwriteonce_volumes_run_next_to_the_node_api(helm: str) -> None:
    docs = render(helm, "site-cpu")
    for name in ("worker", "inference"):
        (term,) = _colocation_terms(workload(docs, name))
        assert _is_next_to(term, docs, "node-api"), name
    assert not _colocation_terms(workload(docs, "node-api"))


def test_readwritemany_volumes_let_pods_spread(helm: str) -> None:
    docs = render(helm, "site-operations")
    for name in ("worker", "inference"):
        assert not _colocation_terms(workload(docs, name)), name
    # The GPU example: shared volumes RWX, so the GPU worker may run on a GPU node; the audit
    # claim is RWO, so the inference pods stay next to the node API.
    gpu = render(helm, "site-gpu")
    assert not _colocation_terms(workload(gpu, "worker"))
    (term,) = _colocation_terms(workload(gpu, "inference"))
    assert _is_next_to(term, gpu, "node-api")


def test_colocation_keeps_the_users_affinity(helm: str) -> None:
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
    user_term = {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}
    affinity = {
        "nodeAffinity": node_affinity,
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [user_term]},
    }
    docs = template(helm, SITE, "--set-json", f"worker.affinity={json.dumps(affinity)}")
    spec = pod_spec(workload(docs, "worker"))
    assert spec["affinity"]["nodeAffinity"] == node_affinity
    first, ours = _colocation_terms(workload(docs, "worker"))
    assert first == user_term and _is_next_to(ours, docs, "node-api")


# ---- observability -------------------------------------------------------------------------


def test_network_policies_admit_the_configured_monitoring_namespace(helm: str) -> None:
    by_name = template(helm, SITE, "--set", "networkPolicy.metrics.namespace=observability")
    expected = {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
    for policy in by_kind(by_name, "NetworkPolicy"):
        if component(policy) in {"node-api", "inference"}:
            peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
            assert {"namespaceSelector": expected} in peers
    selector = {"matchLabels": {"team": "observability"}}
    docs = template(
        helm, SITE,
        "--set-json", f"networkPolicy.metrics.namespaceSelector={json.dumps(selector)}",
        "--set-json", 'networkPolicy.metrics.podSelector={"matchLabels":{"app":"prometheus"}}',
    )  # fmt: skip
    policies = {component(p): p for p in by_kind(docs, "NetworkPolicy")}
    for name in ("node-api", "inference"):
        peers = [peer for rule in policies[name]["spec"]["ingress"] for peer in rule["from"]]
        assert {
            "namespaceSelector": selector,
            "podSelector": {"matchLabels": {"app": "prometheus"}},
        } in peers, name
    off = template(helm, SITE, "--set", "networkPolicy.metrics.enabled=false")
    for policy in by_kind(off, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                assert peer.get("namespaceSelector") != {
                    "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                }


@pytest.mark.parametrize(
    ("case", "components"),
    [("hub-operations", {"aggregator"}), ("site-operations", {"node-api", "inference"})],
)
def test_service_monitors_scrape_the_services_metrics(
    helm: str, case: str, components: set[str]
) -> None:
    docs = render(helm, case)
    monitors = by_kind(docs, "ServiceMonitor")
    assert {component(m) for m in monitors} == components
    services = by_kind(docs, "Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = spec["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["interval"]
        selected = [
            s
            for s in services
            if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        assert endpoint["port"] in {port["name"] for port in selected[0]["spec"]["ports"]}
    if case == "hub-operations":
        assert monitors[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(render(helm, "site-cpu"), "ServiceMonitor")


def _exported_metric_names() -> set[str]:
    """Every metric name the services define (Counter/Histogram/Gauge, collectors, request pairs).

    Read from the services' metrics modules: a string literal "fedmedclip_..." or an
    f-string "{prefix}_..." with the module's ``prefix = "..."``.
    """
    names = set()
    for path in SERVICES.rglob("metrics.py"):
        text = path.read_text()
        prefix = re.search(r'prefix = "([a-z_]+)"', text)
        if prefix:
            text = text.replace("{prefix}", prefix.group(1))
        names |= set(re.findall(r'f?"(fedmedclip_[a-z_]+)"', text))
    return names


# Samples Prometheus derives from a metric: counters get _total, histograms _bucket/_sum/_count.
SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _base_name(sample: str, known: set[str]) -> str:
    if sample in known:
        return sample
    for suffix in SAMPLE_SUFFIXES:
        if sample.endswith(suffix) and sample.removesuffix(suffix) in known:
            return sample.removesuffix(suffix)
    return sample


def _dashboard(chart: Path) -> dict:
    return json.loads((chart / "dashboards" / f"{chart.name}.json").read_text())


def _expressions(dashboard: dict) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("chart", "must_show"),
    [
        (
            HUB,
            {
                "fedmedclip_aggregator_rounds",
                "fedmedclip_aggregator_updates_accepted",
                "fedmedclip_aggregator_updates_rejected",
                "fedmedclip_aggregator_aggregation_seconds",
            },
        ),
        (
            SITE,
            {
                "fedmedclip_node_jobs",
                "fedmedclip_node_job_seconds",
                "fedmedclip_inference_predictions",
                "fedmedclip_inference_request_seconds",
                "fedmedclip_inference_errors",
                "fedmedclip_inference_requests",
                "fedmedclip_node_http_requests",
            },
        ),
    ],
    ids=["hub", "site"],
)
def test_dashboards_use_only_metrics_the_services_export(chart: Path, must_show: set[str]) -> None:
    known = _exported_metric_names()
    assert "fedmedclip_inference_request_seconds" in known  # the f-string prefix resolved
    assert "fedmedclip_aggregator_rounds" in known  # a collector's family
    used = set()
    for expr in _expressions(_dashboard(chart)):
        assert "$namespace" in expr, expr
        for sample in re.findall(r"\b(fedmedclip_[a-z_]+)", expr):
            base = _base_name(sample, known)
            assert base in known, f"{sample} is not exported by any service ({expr})"
            used.add(base)
    assert must_show <= used


@pytest.mark.parametrize("case", ["hub-operations", "site-operations"])
def test_dashboard_config_map_is_labelled_for_grafana(helm: str, case: str) -> None:
    chart = CASES[case][0]
    (config_map,) = by_kind(render(helm, case), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = config_map["data"]
    assert json.loads(config_map["data"][key]) == _dashboard(chart)
    assert not by_kind(
        render(helm, "site-cpu" if chart == SITE else "hub-bundled-postgres"), "ConfigMap"
    )


# ---- chart conventions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("hub-bundled-postgres", {("aggregator", "/ready")}),
        ("site-cpu", {("node-api", "/ready"), ("inference", "/health")}),
    ],
)
def test_helm_test_pod_checks_health(helm: str, case: str, expected: set) -> None:
    docs = render(helm, case)
    (pod,) = by_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<helm test>", "exec")
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    checked = set()
    for url in command[3:]:
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)(/\w+)", url)
        assert match, url
        service = services[match.group(1)]
        assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}
        checked.add((component(service), match.group(3)))
    assert checked == expected


def test_helm_test_script_is_the_same_in_both_charts() -> None:
    hub, site = ((chart / "files" / "check_urls.py").read_text() for chart in (HUB, SITE))
    assert hub == site


@pytest.mark.parametrize(
    ("case", "name", "replicas"),
    [("hub-operations", "aggregator", 2), ("site-cpu", "inference", 1)],
)
def test_disruption_budgets_and_topology_spread(
    helm: str, case: str, name: str, replicas: int
) -> None:
    docs = render(helm, case)
    deployment = workload(docs, name)
    (budget,) = [b for b in by_kind(docs, "PodDisruptionBudget") if component(b) == name]
    assert selects(budget["spec"]["selector"], deployment)
    # Never 0 unavailable (minAvailable = replicas), which would block every node drain.
    assert budget["spec"]["maxUnavailable"] >= 1 and "minAvailable" not in budget["spec"]
    assert deployment["spec"]["replicas"] == replicas
    (spread,) = pod_spec(deployment)["topologySpreadConstraints"]
    assert spread["topologyKey"] == HOSTNAME
    assert selects(spread["labelSelector"], deployment)


def test_inference_autoscaler(helm: str) -> None:
    docs = render(helm, "site-operations")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    deployment = workload(docs, "inference")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert not by_kind(render(helm, "site-cpu"), "HorizontalPodAutoscaler")


def _images(docs: list[dict]) -> dict[str, str]:
    return {
        container["name"]: container["image"]
        for doc in docs
        if doc["kind"] in WORKLOAD_KINDS | {"Pod"}
        for container in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"]
    }


@pytest.mark.parametrize("case", ["hub-operations", "site-operations"])
def test_image_digests(helm: str, case: str) -> None:
    images = _images(render(helm, case))
    assert images
    for name, image in images.items():
        assert image.endswith("@" + DIGEST), f"{name}: {image}"
        assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_gpu_worker_image_digest(helm: str) -> None:
    docs = template(
        helm, SITE, "-f", str(SITE_GPU_VALUES), "--set", f"worker.gpu.imageDigest={DIGEST}"
    )
    images = _images(docs)
    assert re.fullmatch(rf"fedmedclip:[\d.]+-cuda@{DIGEST}", images["worker"]), images["worker"]
    assert "@" not in images["inference"]


@pytest.mark.parametrize("case", ["hub-bundled-postgres", "site-cpu"])
def test_postgres_and_redis_tags_are_pinned(helm: str, case: str) -> None:
    images = _images(render(helm, case))
    third_party = {name: images[name] for name in ("postgresql", "redis") if name in images}
    assert third_party
    for name, image in third_party.items():
        tag = image.split(":", 1)[1]
        assert PINNED_TAG.match(tag), f"{name} runs the floating tag {image}"


@pytest.mark.parametrize(
    ("chart", "value"),
    [(HUB, "postgresql.image.tag=15"), (SITE, "redis.image.tag=7"), (SITE, "image.digest=latest")],
)
def test_schema_rejects_floating_tags_and_bad_digests(helm: str, chart: Path, value: str) -> None:
    assert "does not match pattern" in refused(helm, chart, "--set-string", value)


# ---- backups -------------------------------------------------------------------------------


def _backup_pod(docs: list[dict]) -> dict:
    (cron,) = by_kind(docs, "CronJob")
    return cron["spec"]["jobTemplate"]["spec"]["template"]


def test_hub_backup_cronjob_writes_to_a_kept_claim_and_reaches_the_database(helm: str) -> None:
    docs = render(helm, "hub-operations")
    (cron,) = by_kind(docs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"]
    pod = _backup_pod(docs)
    (container,) = pod["spec"]["containers"]
    assert container["args"][:2] == ["aggregator", "backup"]
    (claim,) = [d for d in by_kind(docs, "PersistentVolumeClaim") if component(d) == "backup"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert container["args"][container["args"].index("--output-dir") + 1] == mounts["backups"]
    # The same database settings as the aggregator, and the database lets the pod in.
    (aggregator,) = pod_spec(workload(docs, "aggregator"))["containers"]
    url = "FEDMEDCLIP_AGG_DATABASE_URL"
    assert env_of(container)[url] == env_of(aggregator)[url]
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert any(
        peer["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    ), "the bundled PostgreSQL must admit the backup pod"


def test_hub_backup_uses_an_existing_claim_and_is_off_by_default(helm: str) -> None:
    docs = render(helm, "hub-external-url")
    volumes = {v["name"]: v for v in _backup_pod(docs)["spec"]["volumes"]}
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == "hub-backups"
    assert not by_kind(docs, "PersistentVolumeClaim")
    default = render(helm, "hub-bundled-postgres")
    assert not by_kind(default, "CronJob")
    assert all(component(d) != "backup" for d in by_kind(default, "PersistentVolumeClaim"))
    assert "keep" in refused(helm, HUB, "--set", "backup.enabled=true", "--set", "backup.keep=0")


def test_hub_backup_command_runs_as_rendered(helm: str, tmp_path: Path) -> None:
    """The CronJob's arguments, given to the real CLI on a SQLite hub, keep `keep` archives."""
    from typer.testing import CliRunner

    from services.cli import app as cli

    docs = template(helm, HUB, "--set", "backup.enabled=true", "--set", "backup.keep=2")
    (container,) = _backup_pod(docs)["spec"]["containers"]
    out = tmp_path / "backups"
    args = [str(out) if arg == "/backups" else arg for arg in container["args"]]
    env = {"FEDMEDCLIP_AGG_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}"}
    runner = CliRunner()
    assert runner.invoke(cli, ["aggregator", "migrate"], env=env).exit_code == 0
    for _ in range(3):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
    assert len(list(out.iterdir())) == 2


# ---- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["hub-bundled-postgres", "site-cpu", "hub-gitops", "site-gitops"])
def test_secrets_are_kept_by_helm(helm: str, case: str) -> None:
    (secret,) = by_kind(render(helm, case), "Secret")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_gitops_renders_are_stable(helm: str) -> None:
    """Without generation every render is the same, so Argo CD sees no change to apply."""
    for case in ("hub-gitops", "site-gitops"):
        chart, args = CASES[case]
        first, second = (template(helm, chart, *args) for _ in range(2))
        assert by_kind(first, "Secret") == by_kind(second, "Secret")
    (secret,) = by_kind(render(helm, "site-gitops"), "Secret")
    values = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert values == {
        "node-token": "node-token-1",
        "admin-token": "admin-token-1",
        "clinician-tokens": "clin-1,clin-2",
        "redis-password": "redis-password-1",
    }


def test_generated_secrets_change_on_every_offline_render(helm: str) -> None:
    """Control for the test above: what generateSecrets=false prevents under GitOps."""
    first, second = (by_kind(template(helm, HUB), "Secret")[0]["data"] for _ in range(2))
    assert first["postgres-password"] != second["postgres-password"]


@pytest.mark.parametrize(
    ("chart", "args", "named"),
    [
        (HUB, (), "auth.adminToken"),
        (HUB, ("--set", "auth.adminToken=a"), "postgresql.auth.password"),
        (SITE, (), "redis.auth.password"),
        (SITE, ("--set", "redis.auth.password=r"), "auth.adminToken"),
        (
            SITE,
            ("--set", "redis.auth.password=r", "--set", "auth.adminToken=a"),
            "auth.clinicianTokens",
        ),
    ],
)
def test_gitops_mode_names_the_missing_secret(
    helm: str, chart: Path, args: tuple[str, ...], named: str
) -> None:
    error = refused(helm, chart, "--set", "generateSecrets=false", *args)
    assert f"{named} is empty and generateSecrets is false" in error


def test_existing_secrets_need_no_generation(helm: str) -> None:
    docs = template(
        helm, SITE,
        "--set", "generateSecrets=false",
        "--set", "auth.existingSecret=site-tokens",
        "--set", "redis.auth.existingSecret=site-redis",
        "--set", "redis.auth.existingSecretKey=password",
    )  # fmt: skip
    assert not by_kind(docs, "Secret"), "nothing left for the chart's own Secret"
    redis = pod_spec(workload(docs, "redis"))["containers"][0]
    for container in (redis, pod_spec(workload(docs, "worker"))["containers"][0]):
        ref = env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "site-redis", "key": "password"}
    worker_env = env_of(pod_spec(workload(docs, "worker"))["containers"][0])
    broker = worker_env["FEDMEDCLIP_NODE_BROKER_URL"]["value"]
    assert broker.startswith("redis://:$(REDIS_PASSWORD)@")
    assert worker_env["FEDMEDCLIP_NODE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == (
        "site-tokens"
    )


def test_a_new_redis_password_restarts_redis_and_its_clients(helm: str) -> None:
    def checksums(password: str) -> dict[str, str]:
        docs = template(helm, SITE, "--set", f"redis.auth.password={password}")
        return {
            component(doc): doc["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
            for doc in by_kind(docs, "Deployment")
        }

    one, two = checksums("one"), checksums("two")
    assert set(one) == {"node-api", "worker", "inference", "redis"}
    assert all(one[name] != two[name] for name in one)


def test_inference_readiness_does_not_wait_for_a_model(helm: str) -> None:
    (container,) = pod_spec(workload(render(helm, "site-cpu"), "inference"))["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe


# ---- secrets kept across upgrades (helm's lookup against a fake API server) ----------------


def render_against(helm: str, api: str, chart: Path, *args: str) -> subprocess.CompletedProcess:
    """`helm template` as an upgrade renders it: `lookup` reads the (fake) cluster."""
    return subprocess.run(
        [
            helm, "template", "fm", str(chart), "--namespace", NAMESPACE,
            "--dry-run=server", "--disable-openapi-validation", "--kube-apiserver", api, *args,
        ],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )  # fmt: skip


def secret_values(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (secret,) = by_kind(docs, "Secret")
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


SITE_LIVE = {
    "redis-password": "live-redis-password",
    "admin-token": "live-admin-token",
    "clinician-tokens": "live-clinician-1,live-clinician-2",
}
HUB_LIVE = {"admin-token": "live-admin-token", "postgres-password": "live-pg-password"}


@pytest.mark.parametrize(
    ("chart", "name", "live"),
    [(SITE, "fm-fedmedclip-site", SITE_LIVE), (HUB, "fm-fedmedclip-hub", HUB_LIVE)],
    ids=["site", "hub"],
)
def test_generated_secrets_are_read_back_not_generated_again(
    helm: str, chart: Path, name: str, live: dict[str, str]
) -> None:
    with fake_kube_api([fake_secret(NAMESPACE, name, live)]) as api:
        upgrades = [secret_values(render_against(helm, api, chart)) for _ in range(2)]
    assert upgrades[0] == upgrades[1] == live
    # Control: with no live Secret (a first install) the values are generated.
    with fake_kube_api([]) as api:
        fresh = secret_values(render_against(helm, api, chart))
    assert set(fresh) == set(live) and not set(fresh.values()) & set(live.values())


def test_given_values_win_over_live_ones_except_the_database_password(helm: str) -> None:
    with fake_kube_api([fake_secret(NAMESPACE, "fm-fedmedclip-hub", HUB_LIVE)]) as api:
        rotated = render_against(helm, api, HUB, "--set", "auth.adminToken=new-admin-token")
        same = render_against(helm, api, HUB, "--set", "postgresql.auth.password=live-pg-password")
        changed = render_against(helm, api, HUB, "--set", "postgresql.auth.password=other")
    assert secret_values(rotated) == {**HUB_LIVE, "admin-token": "new-admin-token"}
    assert secret_values(same) == HUB_LIVE
    assert changed.returncode != 0
    assert "postgresql.auth.password differs from the password in the Secret" in changed.stderr
