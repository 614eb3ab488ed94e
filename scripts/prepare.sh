#!/usr/bin/env bash
# Shared set-up for `make run` and `make test`: services, roles, schema, translations.
# Usage: source scripts/prepare.sh run|test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"
# Development and test runs may use the published development keys; production must not
# (harry_realtime/settings.py refuses to start with them otherwise).
export HARRY_INSECURE_DEV_KEYS="${HARRY_INSECURE_DEV_KEYS:-1}"
eval "$(python scripts/devservices.py up "$1")"
if [ -n "${DATABASE_ADMIN_URL:-}" ]; then
  python manage.py db_bootstrap
fi
python manage.py migrate --database owner --verbosity 0
if compgen -G "locale/*/LC_MESSAGES/django.po" >/dev/null; then
  python manage.py compilemessages --verbosity 0 --ignore=.venv
fi
