#!/usr/bin/env bash
# `metharme chat` on a pseudo-terminal (util-linux `script`): prompts, a streamed reply,
# multi-line input, Ctrl-C stopping a reply without leaving, /save, and Ctrl-D to leave.
# Usage: chat_tty_test.sh METHARME_BINARY SHARED_DIR
set -euo pipefail
BIN=$1
MODEL=$2/fixtures/models/llama-rand-h256
command -v script >/dev/null || { echo "script (util-linux) is missing"; exit 1; }

work=$(mktemp -d)
trap 'exec 3>&- 2>/dev/null || true; kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/in"
out=$work/out

# The terminal session reads its keys from the fifo. -n is large so the Ctrl-C below lands
# while the reply is still being written.
script -q -e -c "'$BIN' chat -m '$MODEL' --temp 0 -n 1500 -t 1" /dev/null <"$work/in" >"$out" &
pid=$!
exec 3>"$work/in"

wait_for() {  # wait_for PATTERN SECONDS [COUNT]: until the output has PATTERN (COUNT times)
  local deadline=$((SECONDS + $2)) want=${3:-1}
  until (($(grep -ao -- "$1" "$out" | wc -l) >= want)); do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for: $1"; echo "--- terminal output:"; cat -A "$out" | tail -30; exit 1
    fi
    sleep 0.1
  done
}

wait_for "Type /help" 120
wait_for "> " 30
printf 'Hi there\n' >&3
# A few words of the reply have streamed: interrupt it.
wait_for "Border Border Border" 120
printf '\003' >&3
wait_for "(stopped)" 60
# A message over two lines; the continuation prompt shows; its reply is interrupted as well.
printf 'first line\\\n' >&3
wait_for "\.\.\. " 30
printf 'second line\n' >&3
sleep 1
printf '\003' >&3
wait_for "(stopped)" 60 2
printf '/save %s\n' "$work/conv.json" >&3
wait_for "saved 4 messages" 60
printf '\004' >&3  # Ctrl-D leaves
exec 3>&-
status=0
wait "$pid" || status=$?
[[ $status == 0 ]] || { echo "chat exited with $status"; exit 1; }

f=$work/conv.json
fail() { echo "$1"; cat "$f"; exit 1; }
grep -q '"text": "Hi there"' "$f" || fail "first message missing"
grep -q '"text": "first line\\nsecond line"' "$f" || fail "the two lines are not one message"
[[ $(grep -c '"role": "model"' "$f") == 2 ]] || fail "expected two (stopped) replies"
reply=$(grep -A1 '"role": "model"' "$f" | sed -n 2p)
((${#reply} > 20 && ${#reply} < 1500 * 7)) || fail "the first reply was not cut short (${#reply} bytes)"
echo "ok: chat on a pseudo-terminal"
