#!/usr/bin/env bash
# Install the Debian packages that provide missing commands: system-packages.sh COMMAND:PACKAGE ...
# (CI starts from a clean machine; as root this runs apt-get, otherwise it says what to install.)
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing commands; install the Debian packages: ${missing[*]}" >&2
  exit 1
fi
echo "[setup] installing ${missing[*]}"
# Keep the packages' own services from starting (the tests start their own on free ports).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
