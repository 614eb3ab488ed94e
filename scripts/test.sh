#!/usr/bin/env bash
# `make test`: lint, the Python suite against real PostgreSQL and Redis, then the JS end-to-end suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test_tools.sh
source scripts/prepare.sh test
trap 'python scripts/devservices.py down' EXIT
ruff check .
ruff format --check .
lint-imports
python manage.py makemigrations --check --dry-run --verbosity 0
python -m pytest -q "$@"
# Schema-driven fuzzing of the REST API against a real server: a few examples per operation with
# a fixed seed (`make fuzz` runs many more); no 5xx, every answer as the OpenAPI schema says.
python scripts/fuzz_api.py --max-examples 5
if [ -f e2e/package.json ]; then
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi
