"""Helpers for the deployment checks: finding helm, and the env names the settings read.

No Docker engine or Kubernetes cluster runs here, so the compose file and the Helm charts
are checked statically: rendered by a real ``helm`` and validated against the Kubernetes
schemas that ``kubernetes-validate`` ships.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path

from services.common.settings import FILE_SUFFIX

ROOT = Path(__file__).resolve().parents[2]
LOCAL_HELM = ROOT / ".tools" / "bin" / "helm"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"

# Which settings class reads which environment variables; the key is the `fedmedclip`
# sub-command that starts the service (the first container argument).
SETTINGS_CLASSES = {
    "aggregator": ("services.aggregator.settings", "AggregatorSettings"),
    "node": ("services.hospital_node.settings", "NodeSettings"),
    "inference": ("services.inference_api.settings", "InferenceSettings"),
}
ENV_PREFIXES = {
    "aggregator": "FEDMEDCLIP_AGG_",
    "node": "FEDMEDCLIP_NODE_",
    "inference": "FEDMEDCLIP_INFERENCE_",
}


def helm_runs(path: Path) -> bool:
    try:
        result = subprocess.run([str(path), "version", "--short"], capture_output=True, timeout=60)
    except OSError:
        return False
    return result.returncode == 0


def find_helm() -> str | None:
    """$HELM, then .tools/bin/helm (scripts/install-helm.sh puts it there), then PATH."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    if LOCAL_HELM.exists() and helm_runs(LOCAL_HELM):
        return str(LOCAL_HELM)
    return shutil.which("helm")


def settings_env_names(service: str) -> tuple[set[str], set[str]]:
    """(all names, required names) that a service's settings class reads.

    Derived as ``env_prefix + FIELD_NAME`` (and ``..._FILE`` for secrets) from the
    pydantic-settings class itself, so a renamed or removed setting makes the deployment
    files fail here. Deprecated names are not known: deployment files use current ones.
    """
    module_name, class_name = SETTINGS_CLASSES[service]
    settings_class = getattr(importlib.import_module(module_name), class_name)
    prefix = settings_class.model_config.get("env_prefix", "")
    assert prefix.upper() == ENV_PREFIXES[service], (
        f"{class_name} env_prefix is {prefix!r}, docs/architecture.md says {ENV_PREFIXES[service]}"
    )
    variables = settings_class.variable_names()
    names = set(variables.values()) | {
        name + FILE_SUFFIX for name in settings_class.secret_variable_names()
    }
    required = {
        variables[field_name]
        for field_name, field in settings_class.model_fields.items()
        if field.is_required()
    }
    return names, required


def service_of(env_name: str) -> str | None:
    for service, prefix in ENV_PREFIXES.items():
        if env_name.startswith(prefix):
            return service
    return None
