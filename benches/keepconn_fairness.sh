#!/bin/bash
# benches/keepconn_fairness.sh — who gets served when nginx keeps FastCGI connections
# (docs/BENCHMARKS.md, "Kept connections: who gets served").
#
# nginx (one worker) in front of php-fpm 8.2 and fastpm `kind = "php"` (thread workers and
# process workers, php_children = "shared"), 4 workers each, serving php-examples/sleep.php?ms=MS
# (default 10: a request holds a worker 10 ms, so 4 workers answer ~400/s), each backend twice:
# `fastcgi_keep_conn on` with upstream `keepalive 4` (as conf/nginx.conf and Debian's
# snippets suggest), and `off`. wrk -c16 (more clients than workers), ROUNDS rounds, the order
# rotated each round. Per scenario and round: req/s, wrk's mean and p99 latency, its timeouts,
# and the connections in service (Little's law: req/s × mean latency; below 16, some of wrk's
# connections waited on requests that were not answered in the window, and p99 — of answered
# requests only — describes the others).
#
# Knobs: ROUNDS (3) SECS (6) MS (10) CONNECTIONS (16) FASTPM (target/release/fastpm, built
# if missing). Needs nginx, wrk, php-fpm8.2, php-cgi (scripts/deps.sh installs them). Runs as
# root (nginx workers as root, so they reach the sockets in the temporary directory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
MS=${MS:-10}
CONNECTIONS=${CONNECTIONS:-16}
FASTPM=${FASTPM:-$ROOT/target/release/fastpm}
[ -x "$FASTPM" ] || (cd "$ROOT" && cargo build --release --bin fastpm)
for tool in nginx wrk php-fpm8.2 php-cgi; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/deps.sh)" >&2; exit 1; }
done
DOC=$ROOT/php-examples
D=$(mktemp -d /tmp/fastpm-keepconn.XXXXXX)
PIDS=()
cleanup() {
  nginx -c "$D/nginx.conf" -p "$D" -s stop 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

# One instance of each backend per keep_conn layout: with keep_conn on, php-fpm's children stay
# with nginx's cached connections and would starve the other layout's requests.
BACKENDS=(php-fpm fastpm-thread fastpm-process)
start() { # backend layout
  local b=$1 k=$2 sock=$D/$1-$2.sock
  case $b in
    php-fpm)
      printf '[global]\npid = %s\nerror_log = %s\ndaemonize = no\n[s]\nlisten = %s\nlisten.backlog = 511\npm = static\npm.max_children = 4\npm.max_requests = 0\n' \
        "$D/$b-$k.pid" "$D/$b-$k.log" "$sock" > "$D/$b-$k.conf"
      /usr/sbin/php-fpm8.2 -F -R -y "$D/$b-$k.conf" > "$D/$b-$k.stderr" 2>&1 &
      ;;
    fastpm-*)
      mkdir -m 700 "$D/rt-$b-$k"
      printf '[global]\nstatus_listen = ""\nruntime_dir = "%s"\n[pool.s]\nworkers = "%s"\nmax_children = 4\n[pool.s.listen]\naddress = "unix:%s"\n[pool.s.app]\nkind = "php"\ndocument_root = "%s"\nphp_children = "shared"\n' \
        "$D/rt-$b-$k" "${b#fastpm-}" "$sock" "$DOC" > "$D/$b-$k.toml"
      "$FASTPM" run -c "$D/$b-$k.toml" > "$D/$b-$k.log" 2>&1 &
      ;;
  esac
  PIDS+=($!)
}
port=18300
SERVERS=""
declare -A PORT
for b in "${BACKENDS[@]}"; do
  for k in on off; do
    start "$b" "$k"
    keepalive=""; [ "$k" = on ] && keepalive="keepalive 4;"
    SERVERS+="upstream u-$b-$k { server unix:$D/$b-$k.sock; $keepalive }
  server { listen 127.0.0.1:$port; location / { include /etc/nginx/fastcgi_params;
    fastcgi_param SCRIPT_FILENAME $DOC/sleep.php; fastcgi_keep_conn $k; fastcgi_pass u-$b-$k; } }
"
    PORT[$b-$k]=$port
    port=$((port + 1))
  done
done
cat > "$D/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $D/nginx.pid;
error_log $D/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  $SERVERS
}
EOF
sleep 2
nginx -c "$D/nginx.conf" -p "$D"
sleep 0.5
for key in "${!PORT[@]}"; do
  body=$(curl -s "http://127.0.0.1:${PORT[$key]}/sleep.php?ms=1")
  [ -n "$body" ] || { echo "$key does not answer" >&2; exit 1; }
done

echo "sleep.php?ms=$MS through nginx, 4 workers each, wrk -t2 -c$CONNECTIONS -d${SECS}s, $ROUNDS rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | keep_conn | backend | req/s | mean ms | p99 ms | timeouts | connections in service of $CONNECTIONS |"
echo "|---:|---|---|---:|---:|---:|---:|---:|"
SCEN=()
for k in on off; do for b in "${BACKENDS[@]}"; do SCEN+=("$b-$k"); done; done
n=${#SCEN[@]}
for r in $(seq 0 $((ROUNDS - 1))); do
  for i in $(seq 0 $((n - 1))); do
    key=${SCEN[$(((i + r) % n))]}
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${SECS}s" --latency "http://127.0.0.1:${PORT[$key]}/sleep.php?ms=$MS")
    python3 - "$r" "$key" "$CONNECTIONS" "$out" <<'PY'
import re, sys
r, key, conns, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def ms(t):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", t)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s*([0-9.]+)", out).group(1))
mean = ms(re.search(r"^\s*Latency\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
to = re.search(r"timeout (\d+)", out)
bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
b, k = key.rsplit("-", 1)
flag = f" ({bad.group(1)} non-2xx)" if bad else ""
print(f"| {r} | {k} | {b} | {rps:.0f} | {mean:.1f} | {p99:.1f} | {to.group(1) if to else 0}{flag} | {rps * mean / 1000:.1f} |")
PY
  done
done
echo
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
