#!/usr/bin/env bash
# `make run`: set everything up, seed demo data, start every process; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh run
trap 'python scripts/devservices.py down' EXIT
python manage.py seed_demo
PORT="${PORT:-8000}"
cat <<INFO

  Harry Realtime is starting on http://127.0.0.1:${PORT}
    Health     http://127.0.0.1:${PORT}/healthz
    API docs   http://127.0.0.1:${PORT}/api/docs/   (schema: /api/schema/)
    Admin      http://127.0.0.1:${PORT}/admin/
    Board      http://127.0.0.1:${PORT}/board/      (staff board: admins and teachers)
    Metrics    http://127.0.0.1:${PORT}/metrics
    WebSocket  ws://127.0.0.1:${PORT}/realtime/v1/websocket?vsn=2.0.0
  Demo logins (password harry-demo): admin@harry.uz, teacher@harry.uz, student@harry.uz,
    parent@harry.uz, teacher@samarkand.uz, student@samarkand.uz; platform@harry.uz (admin, all schools)
  Ctrl-C stops everything; data stays in .data/ (embedded servers) for the next run.

INFO
export PORT
honcho start -f Procfile
