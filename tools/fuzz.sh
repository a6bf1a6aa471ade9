#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DMETHARME_FUZZ=ON, in build-asan/ which ./test.sh --sanitize
# shares: tools/sanitize_build.sh), makes each one's seed
# corpus from fuzz/seeds/ and the fixtures, and runs every target (or the named ones) in turn.
#
#   tools/fuzz.sh [-t SECONDS] [-r RUNS] [TARGET...]    e.g. tools/fuzz.sh -t 15
#
# -t: time per target (default 60 s); -r: stop after this many executions instead. The corpus
# grows in build-asan/corpus/<target>/; a crash leaves build-asan/crash-<target>-* and makes the
# script exit non-zero after the other targets ran. Extra libFuzzer flags: FUZZ_FLAGS="...".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${METHARME_SHARED:-$ROOT/../shared}
BUILD=${FUZZ_BUILD_DIR:-$ROOT/build-asan}
SECONDS_EACH=60
RUNS=""
while getopts "t:r:" o; do
  case $o in
    t) SECONDS_EACH=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    *) sed -n 2,10p "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

./tools/sanitize_build.sh "$BUILD" fuzz_targets

TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then
  for f in fuzz/*_fuzz.cpp; do TARGETS+=("$(basename "$f" .cpp)"); done
fi

# Seeds: the checked-in ones, plus small files of the same kind from the fixtures.
seed_files() {  # target -> fixture files that make good seeds
  local s=$SHARED/fixtures
  case $1 in
    config_fuzz) ls "$s"/models/*/config.json "$s"/gptq/*/config.json "$s"/gptq/*/quantize_config.json \
                    "$ROOT"/models/*/config.json 2>/dev/null ;;
    safetensors_index_fuzz) find "$s" -name '*.index.json' 2>/dev/null ;;
    checksums_fuzz) find "$s" \( -name '*.md5' -o -name '*.sha256' \) 2>/dev/null ;;
    npy_fuzz) find "$s" -name '*.npy' -size -20k 2>/dev/null ;;
    conversation_fuzz) find "$ROOT/tests" -name '*.chat.json' 2>/dev/null ;;
  esac
}
status=0
for t in "${TARGETS[@]}"; do
  corpus=$BUILD/corpus/$t
  mkdir -p "$corpus"
  [[ -d fuzz/seeds/$t ]] && cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  while read -r f; do [[ -n "$f" ]] && cp -n "$f" "$corpus/fixture-$(echo "$f" | md5sum | cut -c1-12)"; done < <(seed_files "$t")
  limit=(-max_total_time="$SECONDS_EACH")
  [[ -n "$RUNS" ]] && limit=(-runs="$RUNS")
  echo "== $t (${RUNS:+$RUNS runs}${RUNS:-$SECONDS_EACH s}, $(ls "$corpus" | wc -l) inputs in the corpus)"
  # halt_on_error: the first sanitizer report ends the run as a crash. rss_limit: 2 GiB per input.
  if ! ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$BUILD/fuzz/$t" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -max_len="${FUZZ_MAX_LEN:-65536}" \
      -artifact_prefix="$BUILD/crash-$t-" -print_final_stats=1 ${FUZZ_FLAGS:-} "$corpus" 2>"$BUILD/$t.log"; then
    echo "   FAILED: see $BUILD/$t.log and $BUILD/crash-$t-*"
    tail -40 "$BUILD/$t.log"
    status=1
  fi
  grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb' "$BUILD/$t.log" | sed 's/^/   /' || true
done
exit $status
