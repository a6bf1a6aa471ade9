#!/usr/bin/env bash
# Runs a node test of tests/web (node's own test runner). With --install: installs the npm
# packages of package-lock.json when node_modules lacks them (needs the npm registry once).
set -euo pipefail
cd "$(dirname "$0")"
if [[ "${1:-}" == "--install" ]]; then
  if [[ -f node_modules/openai/package.json && -f node_modules/playwright-core/package.json ]]; then
    exit 0
  fi
  exec npm ci --no-audit --no-fund
fi
exec node --test "$@"
