#!/usr/bin/env bash
# benches/soak.sh — a long run that watches what a user sees over time: do the master and the
# workers keep their pids, their resident memory and their open descriptors while fastpm
# serves a million requests?
#
# One fastpm (release build) with a `hello` pool of 4 worker processes on a unix socket, driven
# by `fastpm bench` in CHUNKS chunks (REQUESTS in total, CLIENTS closed-loop clients, one
# connection per request, then again with FCGI_KEEP_CONN). After every chunk: each process's
# pid, VmRSS and open descriptor count. Prints a table per layout and a verdict line:
#   soak: LAYOUT: RSS +N KiB (max over processes, last chunk vs first), fds +N, pids same|CHANGED
# and exits 1 if a pid changed, descriptors grew, or resident memory grew by more than
# RSS_SLACK_KIB (default 1024) in any process after the first chunk (the first chunk warms up
# allocators and buffers; growth after it is what a leak looks like).
#
# Loopback only, bounded: REQUESTS (default 1000000) per layout. Knobs: REQUESTS CHUNKS CLIENTS
# WORKERS RSS_SLACK_KIB FASTPM (a fastpm binary; default: cargo build --release).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=${REQUESTS:-1000000}
CHUNKS=${CHUNKS:-10}
CLIENTS=${CLIENTS:-8}
WORKERS=${WORKERS:-4}
RSS_SLACK_KIB=${RSS_SLACK_KIB:-1024}
if [ -z "${FASTPM:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
    FASTPM="$ROOT/target/release/fastpm"
fi
WORK=$(mktemp -d /tmp/fastpm-soak-XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/fastpm.toml" <<CONF
[global]
status_listen = ""
runtime_dir = "$WORK/rt"

[pool.soak]
workers = "process"
max_children = $WORKERS

[pool.soak.listen]
address = "unix:$WORK/soak.sock"

[pool.soak.app]
kind = "hello"
CONF

"$FASTPM" run -c "$WORK/fastpm.toml" >"$WORK/fastpm.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    grep -q "ready:" "$WORK/fastpm.log" && break
    sleep 0.1
done
grep -q "ready:" "$WORK/fastpm.log" || { cat "$WORK/fastpm.log"; exit 1; }

# "pid rss_kib fds" for the master and each of its children, one line each, master first.
sample() {
    local pids
    pids="$SERVER_PID $(cat /proc/"$SERVER_PID"/task/*/children 2>/dev/null | tr ' ' '\n' | sort -n | tr '\n' ' ')"
    for pid in $pids; do
        local rss fds
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        fds=$(ls "/proc/$pid/fd" | wc -l)
        echo "$pid $rss $fds"
    done
}

status=0
for layout in "one connection per request" "kept connections"; do
    keep=""
    [ "$layout" = "kept connections" ] && keep="--keep"
    echo "## soak: $layout ($REQUESTS requests, $CLIENTS clients, $WORKERS worker processes)"
    echo "chunk | requests ok | failed | req/s | per process: pid rss_kib fds"
    first=""
    for chunk in $(seq "$CHUNKS"); do
        summary=$("$FASTPM" bench "unix:$WORK/soak.sock" -c "$CLIENTS" -n $((REQUESTS / CHUNKS)) $keep)
        read -r ok failed rps < <(echo "$summary" | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = s["outcomes"].get("ok", 0)
print(ok, s["requests"] - ok, round(s["ok_per_s"]))')
        now=$(sample)
        echo "$chunk | $ok | $failed | $rps | $(echo "$now" | tr '\n' ';')"
        [ "$failed" -eq 0 ] || status=1
        [ -z "$first" ] && first="$now"
        last="$now"
    done
    verdict=$(python3 - "$first" "$last" "$RSS_SLACK_KIB" <<'PY'
import sys
first = [l.split() for l in sys.argv[1].splitlines()]
last = [l.split() for l in sys.argv[2].splitlines()]
slack = int(sys.argv[3])
same = [p[0] for p in first] == [p[0] for p in last]
rss = max(int(b[1]) - int(a[1]) for a, b in zip(first, last)) if same else 0
fds = max(int(b[2]) - int(a[2]) for a, b in zip(first, last)) if same else 0
ok = same and rss <= slack and fds <= 0
print(f"RSS +{rss} KiB, fds +{fds}, pids {'same' if same else 'CHANGED'}: {'flat' if ok else 'GREW'}")
sys.exit(0 if ok else 1)
PY
    ) || status=1
    echo "soak: $layout: $verdict"
    echo
done
exit $status
