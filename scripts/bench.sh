#!/usr/bin/env bash
# Run one benchmark against the same services the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh test
trap 'python scripts/devservices.py down' EXIT
python "$@"
