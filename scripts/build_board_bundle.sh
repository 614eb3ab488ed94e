#!/usr/bin/env bash
# Rebuild the staff board's browser bundle of @supabase/realtime-js from the version pinned in
# e2e/package.json (the committed file is what the board serves: no CDN, no npm at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
version=$(node -p "require('./e2e/node_modules/@supabase/realtime-js/package.json').version")
cat > /tmp/board-entry.mjs <<JS
export { RealtimeClient } from '@supabase/realtime-js'
JS
NODE_PATH=e2e/node_modules npx --yes esbuild@0.25.10 /tmp/board-entry.mjs --bundle --format=iife \
  --global-name=RealtimeJS --minify --target=es2020 --platform=browser \
  --banner:js="/* @supabase/realtime-js ${version} (MIT), bundled by scripts/build_board_bundle.sh */" \
  --outfile=board/static/board/vendor/realtime-js.min.js --log-level=warning
echo "board/static/board/vendor/realtime-js.min.js: @supabase/realtime-js ${version}"
