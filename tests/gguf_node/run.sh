#!/usr/bin/env bash
# Runs the GGUF peer test (node's own test runner). With --install: installs node-llama-cpp
# (pinned in package.json, CPU build for linux-x64 only: no install scripts, no optional GPU
# packages) when node_modules lacks it. Needs the npm registry once.
set -euo pipefail
cd "$(dirname "$0")"
if [[ "${1:-}" == "--install" ]]; then
  if [[ -f node_modules/node-llama-cpp/package.json && -d node_modules/@node-llama-cpp/linux-x64 ]]; then
    exit 0
  fi
  if ! command -v npm >/dev/null; then
    echo "npm not found: the GGUF peer test will be skipped" >&2
    exit 0
  fi
  exec npm install --no-audit --no-fund --ignore-scripts --omit=optional --no-save
fi
exec node --test "$@"
