#!/usr/bin/env bash
# `make test-cluster`: the scale-out test (e2e/cluster.js) on real HAProxy, PgBouncer, Redis with
# Sentinel, two web processes and two listeners, started on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh haproxy:haproxy pgbouncer:pgbouncer redis-server:redis-server redis-cli:redis-tools
source scripts/prepare.sh test
trap 'python scripts/devservices.py down' EXIT
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && timeout 600 node --test --test-concurrency=1 cluster.js)
