#!/usr/bin/env bash
# First start of the compose stack (compose.yaml at the repository root):
#
#   1. writes .env next to compose.yaml with fresh random secrets (kept if it exists);
#   2. builds the image and starts the hub (PostgreSQL, migrations, aggregator);
#   3. registers site_a and site_b on the hub and stores their node tokens in .env;
#   4. starts everything and waits until every service is healthy.
#
# Safe to run again: existing secrets and node tokens are kept, registered sites are not
# registered twice. Needs only Docker with the compose plugin on the host.
#
#   bash deploy/compose/bootstrap.sh [extra `docker compose up` arguments, e.g. --build]
#   CPU_WORKERS=0 COMPOSE_PROFILES=gpu bash deploy/compose/bootstrap.sh    # GPU workers
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"
env_file="${repo_root}/.env"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Value of KEY in .env, empty when absent.
env_get() { [[ -f "${env_file}" ]] && sed -n "s/^$1=//p" "${env_file}" | tail -n 1 || true; }

env_ensure() {
    local key="$1" value="$2"
    if [[ -z "$(env_get "${key}")" ]]; then
        sed -i.bak "/^${key}=/d" "${env_file}" && rm -f "${env_file}.bak"
        printf '%s=%s\n' "${key}" "${value}" >>"${env_file}"
    fi
}

if [[ ! -f "${env_file}" ]]; then
    (umask 077 && printf '# FedMedCLIP compose secrets, written by deploy/compose/bootstrap.sh. Keep private.\n' >"${env_file}")
fi
env_ensure POSTGRES_PASSWORD "$(random_hex 24)"
env_ensure HUB_ADMIN_TOKEN "$(random_hex 32)"
env_ensure SITE_A_ADMIN_TOKEN "$(random_hex 32)"
env_ensure SITE_B_ADMIN_TOKEN "$(random_hex 32)"
env_ensure SITE_A_CLINICIAN_TOKENS "$(random_hex 32)"
env_ensure SITE_B_CLINICIAN_TOKENS "$(random_hex 32)"

# Until the hub has issued them, the node tokens are placeholders for this process only, so
# that compose.yaml (which requires them) can start the hub.
export SITE_A_NODE_TOKEN="${SITE_A_NODE_TOKEN:-$(env_get SITE_A_NODE_TOKEN)}"
export SITE_B_NODE_TOKEN="${SITE_B_NODE_TOKEN:-$(env_get SITE_B_NODE_TOKEN)}"
placeholder="not-registered-yet"
[[ -n "${SITE_A_NODE_TOKEN}" ]] || SITE_A_NODE_TOKEN="${placeholder}"
[[ -n "${SITE_B_NODE_TOKEN}" ]] || SITE_B_NODE_TOKEN="${placeholder}"

mkdir -p var/compose/site_a/datasets var/compose/site_b/datasets var/compose/weights

log "building the image and starting the hub"
docker compose build
docker compose up -d --wait postgres aggregator

# Registration runs inside the aggregator container, so the host needs no HTTP client.
register() {
    local site="$1"
    docker compose exec -T aggregator python - "${site}" <<'PY'
import json
import os
import sys
import urllib.request

request = urllib.request.Request(
    "http://127.0.0.1:8100/api/v1/nodes",
    data=json.dumps({"name": sys.argv[1]}).encode(),
    headers={
        "Authorization": "Bearer " + os.environ["FEDMEDCLIP_AGG_ADMIN_TOKEN"],
        "Content-Type": "application/json",
    },
    method="POST",
)
with urllib.request.urlopen(request, timeout=30) as response:
    print(json.load(response)["token"])
PY
}

for site in site_a site_b; do
    key="$(printf '%s' "${site}" | tr '[:lower:]' '[:upper:]')_NODE_TOKEN"
    if [[ "${!key}" == "${placeholder}" ]]; then
        log "registering ${site} on the hub"
        token="$(register "${site}")"
        env_ensure "${key}" "${token}"
        export "${key}=${token}"
    fi
done

log "starting both sites"
docker compose up -d --wait "$@"
log "ready. Secrets are in ${env_file}; see docs/deployment.md for the next steps"
