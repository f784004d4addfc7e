#!/usr/bin/env bash
# First start of the compose stack (compose.yaml at the repository root):
#
#   1. writes fresh random secrets, each kept if it exists: files under var/compose/secrets/
#      (mounted into the containers as compose secrets) and the Redis passwords in .env;
#   2. builds the image and starts the hub (PostgreSQL, migrations, aggregator);
#   3. registers site_a and site_b on the hub and stores their node tokens as secrets;
#   4. starts everything and waits until every service is healthy.
#
# Safe to run again: existing secrets and node tokens are kept, registered sites are not
# registered twice. Needs only Docker with the compose plugin on the host.
#
#   bash deploy/compose/bootstrap.sh [extra `docker compose up` arguments, e.g. --build]
#   CPU_WORKERS=0 COMPOSE_PROFILES=gpu bash deploy/compose/bootstrap.sh    # GPU workers
#   FEDMEDCLIP_TLS=1 bash deploy/compose/bootstrap.sh    # HTTPS and mutual TLS
#
# FEDMEDCLIP_TLS=1 also issues the certificates (deploy/compose/issue-certificates.sh) and
# names compose.tls.yaml next to compose.yaml in .env (COMPOSE_FILE), so that every later
# `docker compose` command runs the TLS variant too.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"
env_file="${repo_root}/.env"
secrets_dir="${repo_root}/var/compose/secrets"

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

# Compose bind-mounts a secret file as it is, so the containers' users (10001, postgres)
# must be able to read it: the files are world-readable inside a folder only you can enter.
secret_get() { [[ -f "${secrets_dir}/$1" ]] && cat "${secrets_dir}/$1" || true; }

secret_set() { (umask 022 && printf '%s' "$2" >"${secrets_dir}/$1"); }

secret_ensure() { [[ -n "$(secret_get "$1")" ]] || secret_set "$1" "$2"; }

# A value an earlier version of this script kept in .env (so that an existing database
# keeps its password), else the given default.
from_env_or() { local old; old="$(env_get "$1")"; printf '%s' "${old:-$2}"; }

if [[ ! -f "${env_file}" ]]; then
    (umask 077 && printf '# FedMedCLIP compose settings, written by deploy/compose/bootstrap.sh. Keep private.\n' >"${env_file}")
fi
mkdir -p "${secrets_dir}" && chmod 700 "${secrets_dir}"
placeholder="not-registered-yet"

secret_ensure postgres_password "$(from_env_or POSTGRES_PASSWORD "$(random_hex 24)")"
secret_ensure hub_database_url "postgresql+psycopg://fedmedclip:$(secret_get postgres_password)@postgres:5432/fedmedclip"
secret_ensure hub_admin_token "$(from_env_or HUB_ADMIN_TOKEN "$(random_hex 32)")"
for site in site_a site_b; do
    prefix="$(printf '%s' "${site}" | tr '[:lower:]' '[:upper:]')"
    secret_ensure "${site}_admin_token" "$(from_env_or "${prefix}_ADMIN_TOKEN" "$(random_hex 32)")"
    secret_ensure "${site}_clinician_tokens" "$(from_env_or "${prefix}_CLINICIAN_TOKENS" "$(random_hex 32)")"
    # Until the hub has issued it, a placeholder, so that compose (which needs every secret
    # file) can start the hub.
    secret_ensure "${site}_node_token" "$(from_env_or "${prefix}_NODE_TOKEN" "${placeholder}")"
done
# The node's broker URL carries the Redis password, so it is an environment value.
env_ensure SITE_A_REDIS_PASSWORD "$(random_hex 24)"
env_ensure SITE_B_REDIS_PASSWORD "$(random_hex 24)"
if [[ "${FEDMEDCLIP_TLS:-0}" == 1 ]]; then
    env_ensure COMPOSE_FILE "compose.yaml:compose.tls.yaml"
fi
# Compose reads COMPOSE_FILE from .env; this script's own commands follow it as well.
compose_file="$(env_get COMPOSE_FILE)"
[[ -z "${compose_file}" ]] || export COMPOSE_FILE="${compose_file}"

mkdir -p var/compose/site_a/datasets var/compose/site_b/datasets var/compose/weights

log "building the image and starting the hub"
docker compose build
if [[ "${COMPOSE_FILE:-}" == *compose.tls.yaml* ]]; then
    log "issuing the federation CA and the certificates (fedmedclip pki)"
    bash "${repo_root}/deploy/compose/issue-certificates.sh"
fi
docker compose up -d --wait postgres aggregator

# Registration runs inside the aggregator container, so the host needs no HTTP client. Under
# TLS it verifies the hub against the federation CA; an admin needs no client certificate.
register() {
    local site="$1"
    docker compose exec -T aggregator python - "${site}" <<'PY'
import json
import os
import ssl
import sys
import urllib.request

tls = bool(os.environ.get("FEDMEDCLIP_AGG_SSL_CERTFILE"))
context = ssl.create_default_context(cafile="/run/secrets/federation_ca") if tls else None
request = urllib.request.Request(
    ("https" if tls else "http") + "://127.0.0.1:8100/api/v1/nodes",
    data=json.dumps({"name": sys.argv[1]}).encode(),
    headers={
        "Authorization": "Bearer " + open("/run/secrets/hub_admin_token").read().strip(),
        "Content-Type": "application/json",
    },
    method="POST",
)
with urllib.request.urlopen(request, timeout=30, context=context) as response:
    print(json.load(response)["token"])
PY
}

for site in site_a site_b; do
    if [[ "$(secret_get "${site}_node_token")" == "${placeholder}" ]]; then
        log "registering ${site} on the hub"
        token="$(register "${site}")"
        secret_set "${site}_node_token" "${token}"
    fi
done

log "starting both sites"
docker compose up -d --wait "$@"
log "ready. Secrets are in ${secrets_dir} and ${env_file}; see docs/deployment.md for the next steps"
