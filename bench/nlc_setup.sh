# Sourced by the bench scripts that drive llama.cpp through the npm package node-llama-cpp (its
# prebuilt CPU build, pinned to NLC_VERSION). `nlc_setup [DIR]` sets NLC to a temporary folder,
# removed at exit, whose node_modules holds node-llama-cpp: DIR's node_modules when DIR is given
# (e.g. tests/gguf_node after its --install), otherwise a fresh npm install.
NLC_VERSION=${NLC_VERSION:-3.21.1}

nlc_setup() {
  local given=${1:-}
  if [[ -n $given ]]; then
    given=$(cd "$given" && pwd)
    [[ -f $given/node_modules/node-llama-cpp/package.json ]] ||
      { echo "no node-llama-cpp under $given/node_modules" >&2; exit 1; }
  else
    command -v npm >/dev/null || { echo "npm is needed (or pass --nlc DIR)" >&2; exit 1; }
  fi
  NLC=$(mktemp -d "${TMPDIR:-/tmp}/metharme-nlc-XXXXXX")
  trap 'rm -rf "$NLC"' EXIT
  if [[ -n $given ]]; then
    ln -s "$given/node_modules" "$NLC/node_modules"
    return 0
  fi
  echo "== installing node-llama-cpp@$NLC_VERSION into $NLC" >&2
  npm view "node-llama-cpp@$NLC_VERSION" version >/dev/null || { echo "the npm registry does not answer" >&2; exit 1; }
  # --ignore-scripts: the prebuilt binaries, never a source build of llama.cpp here.
  (cd "$NLC" && npm install --silent --no-audit --no-fund --ignore-scripts --omit=optional \
      "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >/dev/null)
}
