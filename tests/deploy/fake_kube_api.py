"""A Kubernetes API server that knows only discovery and a few Secrets, for helm's `lookup`.

`helm template --dry-run=server` renders against a cluster: the charts' `lookup` of their
own Secret then reads what this server holds, exactly as it would read a live cluster. That
is how the tests show that a value generated at install is read back on upgrade instead of
being generated again. Every other object is absent (404), and nothing can be written.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The API groups the charts render objects of: helm maps each rendered kind through them.
GROUPS = {
    "apps": ("v1", {"deployments": "Deployment", "statefulsets": "StatefulSet"}),
    "batch": ("v1", {"jobs": "Job"}),
    "networking.k8s.io": ("v1", {"networkpolicies": "NetworkPolicy", "ingresses": "Ingress"}),
    "policy": ("v1", {"poddisruptionbudgets": "PodDisruptionBudget"}),
    "autoscaling": ("v2", {"horizontalpodautoscalers": "HorizontalPodAutoscaler"}),
    "monitoring.coreos.com": ("v1", {"servicemonitors": "ServiceMonitor"}),
}
CORE = {
    "secrets": "Secret",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "configmaps": "ConfigMap",
    "pods": "Pod",
}


def _resource_list(group_version: str, resources: dict[str, str]) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": True,
                "kind": kind,
                "verbs": ["get", "list"],
            }
            for name, kind in resources.items()
        ],
    }


def _discovery() -> dict[str, dict]:
    answers = {
        "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/api/v1": _resource_list("v1", CORE),
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                    "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
                }
                for group, (version, _) in GROUPS.items()
            ],
        },
    }
    for group, (version, resources) in GROUPS.items():
        answers[f"/apis/{group}/{version}"] = _resource_list(f"{group}/{version}", resources)
    return answers


def secret(namespace: str, name: str, data: dict[str, str], *, release: str = "fm") -> dict:
    """A Secret as the release ``release`` left it (with Helm's ownership metadata)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release,
                "meta.helm.sh/release-namespace": namespace,
            },
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


@contextmanager
def fake_kube_api(secrets: list[dict]) -> Iterator[str]:
    """Serve discovery and ``secrets`` on a loopback port; yields the server's URL."""
    answers = _discovery()
    for item in secrets:
        meta = item["metadata"]
        answers[f"/api/v1/namespaces/{meta['namespace']}/secrets/{meta['name']}"] = item

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            body = answers.get(self.path.split("?", 1)[0])
            status = 200 if body is not None else 404
            if body is None:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet: helm's requests are not test output."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
