#!/usr/bin/env bash
# Tools the test suite needs beyond Python and Node, from Debian, installed when missing:
# chromium + chromium-driver (the staff board's browser test) and prometheus (promtool checks the
# alert rules). As root it installs them (failing loudly if apt cannot); otherwise it says what is
# missing, and those tests skip with that reason (they fail instead when CI is set).
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v promtool >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "[test_tools] missing ${missing[*]} (not root: install them with apt-get to run every test)" >&2
  exit 0
fi
echo "[test_tools] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
