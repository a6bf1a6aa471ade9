#!/usr/bin/env bash
# Installs the Debian packages metharme needs to build and test, if any is missing.
# A no-op when everything is present; needs root (or sudo) otherwise.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libsentencepiece-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev liblapacke-dev zlib1g-dev
)
# Extra packages some tests need (browser tests, etc.) are listed in tools/deps-extra.txt.
# A line "package:command" counts the package as present when the command is on PATH.
declare -A COMMAND_OF=()
if [[ -f "$(dirname "$0")/deps-extra.txt" ]]; then
  while read -r p; do
    [[ -z "$p" || "$p" == \#* ]] && continue
    if [[ "$p" == *:* ]]; then COMMAND_OF[${p%%:*}]=${p#*:}; p=${p%%:*}; fi
    PACKAGES+=("$p")
  done <"$(dirname "$0")/deps-extra.txt"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if [[ -n "${COMMAND_OF[$p]:-}" ]] && command -v "${COMMAND_OF[$p]}" >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "Installing missing packages: ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
