#!/usr/bin/env bash
# `make fuzz`: schema-driven API fuzzing (scripts/fuzz_api.py) against the same services as the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh test
trap 'python scripts/devservices.py down' EXIT
python scripts/fuzz_api.py "$@"
