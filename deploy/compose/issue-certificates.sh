#!/usr/bin/env bash
# Certificates for the TLS variant of the compose stack (compose.tls.yaml), made with
# `fedmedclip pki`; run by bootstrap.sh when FEDMEDCLIP_TLS=1:
#
#   var/compose/pki/ca.crt, ca.key           the federation CA (its key is never mounted)
#   var/compose/secrets/tls/federation_ca.crt  the CA certificate every service trusts
#   var/compose/secrets/tls/hub/aggregator.*   the hub's server certificate
#   var/compose/secrets/tls/site_X/localhost.* the site's server certificate (node and
#                                              inference API, reached on 127.0.0.1)
#   var/compose/secrets/tls/site_X/site_X.*    the site's client certificate for mutual TLS;
#                                              its common name is the site's node name
#
# Existing files are kept. To renew a certificate (they live 90 days), delete its files and
# run this again, then restart the services that use it: the hub binds a node by the name in
# its certificate, so a renewed certificate needs nothing at the hub.
#
# FEDMEDCLIP_CLI is the command that runs `fedmedclip` (default: the compose image through
# `docker run`, with the two folders mounted at the same paths).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pki_dir="${FEDMEDCLIP_PKI_DIR:-${repo_root}/var/compose/pki}"
tls_dir="${FEDMEDCLIP_TLS_DIR:-${repo_root}/var/compose/secrets/tls}"
sites=(site_a site_b)

mkdir -p "${pki_dir}" "${tls_dir}"
chmod 700 "${pki_dir}"

if [[ -n "${FEDMEDCLIP_CLI:-}" ]]; then
    read -r -a cli <<<"${FEDMEDCLIP_CLI}"
else
    cli=(docker run --rm --user "$(id -u):$(id -g)" -v "${pki_dir}:${pki_dir}"
        -v "${tls_dir}:${tls_dir}" "${FEDMEDCLIP_IMAGE:-fedmedclip:local}")
fi
pki() { "${cli[@]}" pki "$@"; }

[[ -f "${pki_dir}/ca.crt" ]] || pki init --dir "${pki_dir}" --name "FedMedCLIP compose federation CA"
cp "${pki_dir}/ca.crt" "${tls_dir}/federation_ca.crt"

# Issue into OUT unless its certificate STEM.crt exists already.
issue() {
    local out="$1" stem="$2"
    shift 2
    [[ -f "${tls_dir}/${out}/${stem}.crt" ]] && return 0
    mkdir -p "${tls_dir}/${out}"
    pki "$@" --dir "${pki_dir}" --out "${tls_dir}/${out}"
}

issue hub aggregator issue-server --host aggregator --host localhost --host 127.0.0.1
for site in "${sites[@]}"; do
    issue "${site}" localhost issue-server --host localhost --host 127.0.0.1
    issue "${site}" "${site}" issue-node "${site}"
done

# Compose bind-mounts secret files as they are and the services run as uid 10001, so the
# keys are made readable inside the secrets folder, which only you can enter (as for the
# tokens). The CA key stays 0600 in var/compose/pki.
chmod -R a+rX "${tls_dir}"
