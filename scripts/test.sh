#!/usr/bin/env bash
# Installs everything the test suite needs, starts PostgreSQL and Redis on loopback ports,
# and runs the whole suite (lint, unit, integration, deployment checks) with pytest.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PIP_DISABLE_PIP_VERSION_CHECK=1

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v chromium >/dev/null || need_apt+=(chromium)  # console browser tests (Playwright drives it)
PG_BIN=${FEDMEDCLIP_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$PG_BIN/initdb" ] || need_apt+=(postgresql-15)
# A real PACS for the DICOMweb tests (tests/support/orthanc.py starts it).
command -v Orthanc >/dev/null || need_apt+=(orthanc)
dpkg -s orthanc-dicomweb >/dev/null 2>&1 || need_apt+=(orthanc-dicomweb)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing system packages: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

echo "== installing the project (editable, with dev extras)"
python -m pip install -q -e ".[dev]"

echo "== installing helm (for chart tests)"
bash scripts/install-helm.sh "$ROOT/.tools/bin"
export HELM="$ROOT/.tools/bin/helm"

WORK=$(mktemp -d /tmp/fmc-ci-XXXXXX)
PG_PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REDIS_PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting PostgreSQL on 127.0.0.1:$PG_PORT and Redis on 127.0.0.1:$REDIS_PORT"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U postgres >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
export FEDMEDCLIP_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
export FEDMEDCLIP_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

echo "== lint"
ruff check .
ruff format --check .

echo "== tests"
python -m pytest "$@"
