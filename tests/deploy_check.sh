#!/usr/bin/env bash
# Checks the files of deploy/ with the programs that will read them: haproxy -c, nginx -t,
# systemd-analyze verify, promtool check config / check rules / test rules. Exit 77 (skipped)
# names a missing program; tools/deps.sh installs them all.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
deploy=$repo/deploy
for p in haproxy nginx systemd-analyze promtool; do
  if ! command -v "$p" >/dev/null && ! [[ -x /usr/sbin/$p ]]; then
    echo "SKIP: $p is not installed (tools/deps.sh installs it)"
    exit 77
  fi
done
export PATH=$PATH:/usr/sbin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== haproxy -c"
(set -a && . "$deploy/haproxy/haproxy.env" && set +a && haproxy -c -f "$deploy/haproxy/haproxy.cfg")

echo "== nginx -t (deploy/nginx/metharme.conf inside a minimal http block)"
cat >"$tmp/nginx.conf" <<NGX
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $tmp/body; proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/f; uwsgi_temp_path $tmp/u; scgi_temp_path $tmp/s;
  include $deploy/nginx/metharme.conf;
}
NGX
nginx -t -q -e "$tmp/error.log" -c "$tmp/nginx.conf"

echo "== systemd-analyze verify (template and an instance)"
mkdir -p "$tmp/units"
cp "$deploy/systemd/metharme@.service" "$tmp/units/"
ln -s "metharme@.service" "$tmp/units/metharme@5001.service"
out=$(cd "$tmp/units" && systemd-analyze verify ./metharme@.service ./metharme@5001.service 2>&1) || {
  echo "$out"
  exit 1
}
# verify prints problems it does not count as fatal: treat any output as a failure.
if [[ -n "$out" ]]; then
  echo "$out"
  exit 1
fi
grep -q '^TimeoutStopSec=45' "$deploy/systemd/metharme@.service"
grep -q -- '--drain-timeout 30' "$deploy/systemd/metharme@.service"

echo "== promtool"
promtool check config "$deploy/prometheus/prometheus.yml"
promtool check rules "$deploy/prometheus/metharme-rules.yml"
(cd "$deploy/prometheus" && promtool test rules metharme-rules.test.yml)
echo "deploy: all checks passed"
