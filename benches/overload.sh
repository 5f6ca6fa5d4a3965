#!/usr/bin/env bash
# benches/overload.sh — the backlog experiment (docs/OVERLOAD.md).
#
# One run, same machine, same load for every server: 4 workers, a 50 ms request, 200
# closed-loop clients that give up after 1 s (nginx's read timeout, as `fastpm bench
# --timeout-ms`), 8 s each, over a unix socket. fastpm with backlog 64 / 511 / 4096 × overload
# policy none / deadline / codel, and php-fpm 8.2 with the same three backlogs. Before them, a
# baseline: fastpm with exactly 4 clients (no queue) measures the pool's real capacity.
#
# Over time: while each run is under load, the listener's kernel accept queue (Recv-Q of
# `ss -lnx`, which works for php-fpm too, whose own status shows 0 for unix sockets) is sampled
# every 100 ms, and `fastpm bench --timeline-ms` counts outcomes per interval.
#
# Writes docs/OVERLOAD.md (table + method) and one SVG per backlog next to it
# (docs/overload-BACKLOG.svg: queue depth and goodput over time), and keeps every raw JSON in
# $KEEP_DIR if set. Needs jq, curl, ss (iproute2), python3 (no extra modules).
# Knobs (environment): CLIENTS SECS TIMEOUT_MS WORK_MS WORKERS BACKLOGS POLICIES DEADLINE_MS
# CODEL_TARGET CODEL_INTERVAL TIMELINE_MS OUT PHP_FPM.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-200}
SECS=${SECS:-8}
TIMEOUT_MS=${TIMEOUT_MS:-1000}
WORK_MS=${WORK_MS:-50}
WORKERS=${WORKERS:-4}
BACKLOGS=${BACKLOGS:-"64 511 4096"}
# A policy "codel:TARGET" is codel with that target (the default list adds one equal to the
# service time: CoDel's target must be comparable to it, see docs/OVERLOAD.md).
POLICIES=${POLICIES:-"none deadline codel codel:${WORK_MS}ms"}
# deadline: half the client's timeout — a request that waited longer is unlikely to be answered
# in time and only delays the ones behind it.
DEADLINE_MS=${DEADLINE_MS:-$((TIMEOUT_MS / 2))}
CODEL_TARGET=${CODEL_TARGET:-5ms}
CODEL_INTERVAL=${CODEL_INTERVAL:-100ms}
# Goodput bins: 500 ms hold ~40 answers at capacity, fine enough to see the collapse one client
# timeout into the run, coarse enough that the workers' 50 ms cycles straddling a bin edge move
# a point by a few percent, not by a quarter.
TIMELINE_MS=${TIMELINE_MS:-500}
QUEUE_SAMPLE_S=0.1
OUT=${OUT:-$ROOT/docs/OVERLOAD.md}
PHP_FPM=${PHP_FPM:-/usr/sbin/php-fpm8.2}
STATUS_PORT=${STATUS_PORT:-19381}

WORK=$(mktemp -d /tmp/fastpm-overload.XXXXXX)
SERVER_PID=""
SAMPLER_PID=""
cleanup() {
    if [[ -n "$SAMPLER_PID" ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
    if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -n "${KEEP_DIR:-}" ]]; then mkdir -p "$KEEP_DIR"; cp "$WORK"/*.json "$WORK"/*.jsonl "$WORK"/*.queue "$KEEP_DIR"/ 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

(cd "$ROOT" && cargo build --quiet --bin fastpm)
FASTPM=$ROOT/target/debug/fastpm
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

wait_for() { # wait_for LOGFILE TEXT
    for _ in $(seq 1 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$1" >&2; return 1; }
        sleep 0.05
    done
    cat "$1" >&2
    return 1
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# sample_queue SOCKET T0_MS OUT: every QUEUE_SAMPLE_S, append "MS_SINCE_T0 DEPTH" — the
# listener's Recv-Q in `ss -lnx`, i.e. connections waiting in its kernel accept queue.
sample_queue() {
    local now depth
    while :; do
        now=$(date +%s%3N)
        depth=$(ss -lnxH src "$1" 2>/dev/null | awk 'NR == 1 { print $3 }')
        if [[ -n "$depth" ]]; then echo "$((now - $2)) $depth" >>"$3"; fi
        sleep "$QUEUE_SAMPLE_S"
    done
}

# run_bench NAME CLIENTS TIMEOUT_MS ARGS... → $WORK/NAME.bench.json, $WORK/NAME.queue
run_bench() {
    local name=$1 clients=$2 timeout=$3 t0
    shift 3
    : >"$WORK/$name.queue"
    t0=$(date +%s%3N) # the bench's timeline starts a few ms later: same clock within a sample
    sample_queue "$WORK/$name.sock" "$t0" "$WORK/$name.queue" &
    SAMPLER_PID=$!
    "$FASTPM" bench "unix:$WORK/$name.sock" -c "$clients" -d "$SECS" --timeout-ms "$timeout" \
        --timeline-ms "$TIMELINE_MS" "$@" >"$WORK/$name.bench.json"
    kill "$SAMPLER_PID"
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
}

# record NAME SERVER BACKLOG POLICY CLIENTS
record() {
    jq -c --arg name "$1" --arg server "$2" --argjson backlog "$3" --arg policy "$4" \
        --argjson clients "$5" --slurpfile status "$WORK/$1.status.json" \
        --rawfile queue "$WORK/$1.queue" \
        '{name: $name, server: $server, backlog: $backlog, policy: $policy, clients: $clients,
          bench: ., status: $status[0],
          queue: ($queue | split("\n") | map(select(length > 0) | split(" ") | map(tonumber)))}' \
        "$WORK/$1.bench.json" >>"$RESULTS"
}

fastpm_run() { # fastpm_run NAME BACKLOG POLICY[:TARGET] CLIENTS TIMEOUT_MS
    local name=$1 backlog=$2 spec=$3 clients=$4 timeout=$5
    local policy=${spec%%:*} target=$CODEL_TARGET
    [[ "$spec" == *:* ]] && target=${spec#*:}
    cat >"$WORK/$name.toml" <<CONF
[global]
status_listen = "127.0.0.1:$STATUS_PORT"
runtime_dir = "$WORK/rt-$name"
log_level = "warn"

[pool.bench]
workers = "thread"
max_children = $WORKERS

[pool.bench.listen]
address = "unix:$WORK/$name.sock"
backlog = $backlog

[pool.bench.app]
kind = "sleep"

[pool.bench.overload]
policy = "$policy"
max_queue_wait = "${DEADLINE_MS}ms"
target = "$target"
interval = "$CODEL_INTERVAL"
CONF
    RUST_LOG=info "$FASTPM" run -c "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    wait_for "$WORK/$name.log" "ready:"
    run_bench "$name" "$clients" "$timeout" --path "/sleep?ms=$WORK_MS"
    sleep 0.3 # let the workers finish what they hold, so the counters are final
    curl -fsS "http://127.0.0.1:$STATUS_PORT/status?json" | jq '.pools[0]' >"$WORK/$name.status.json"
    stop_server
    record "$name" fastpm "$backlog" "$spec" "$clients"
    echo "done: $name" >&2
}

php_fpm_run() { # php_fpm_run NAME BACKLOG
    local name=$1 backlog=$2
    printf '<?php usleep(%d); echo "ok\\n";\n' "$((WORK_MS * 1000))" >"$WORK/work.php"
    cat >"$WORK/$name.conf" <<CONF
[global]
pid = $WORK/$name.pid
error_log = $WORK/$name.log
log_level = notice
daemonize = no

[bench]
listen = $WORK/$name.sock
listen.backlog = $backlog
listen.mode = 0600
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
pm.status_path = /status
CONF
    "$PHP_FPM" -n -F -R -y "$WORK/$name.conf" >"$WORK/$name.stderr" 2>&1 &
    SERVER_PID=$!
    wait_for "$WORK/$name.log" "ready to handle connections"
    run_bench "$name" "$CLIENTS" "$TIMEOUT_MS" --path /work.php -p "SCRIPT_FILENAME=$WORK/work.php"
    sleep 1.2 # php-fpm runs what it accepted, abandoned or not: let it finish
    "$FASTPM" request "unix:$WORK/$name.sock" /status -p QUERY_STRING=json \
        | sed -e '1,/^\r\{0,1\}$/d' >"$WORK/$name.status.json"
    stop_server
    record "$name" php-fpm "$backlog" "-" "$CLIENTS"
    echo "done: $name" >&2
}

# The machine is shared: the load average before and after goes into the report.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
fastpm_run baseline 511 none "$WORKERS" 60000
for backlog in $BACKLOGS; do
    for policy in $POLICIES; do
        fastpm_run "fastpm-$backlog-${policy/:/-}" "$backlog" "$policy" "$CLIENTS" "$TIMEOUT_MS"
    done
    php_fpm_run "php-fpm-$backlog" "$backlog"
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 "$ROOT/benches/overload_report.py" "$RESULTS" "$OUT" \
    --clients "$CLIENTS" --secs "$SECS" --timeout-ms "$TIMEOUT_MS" --work-ms "$WORK_MS" \
    --workers "$WORKERS" --deadline-ms "$DEADLINE_MS" --codel "$CODEL_TARGET/$CODEL_INTERVAL" \
    --queue-sample-ms "$(awk "BEGIN { print $QUEUE_SAMPLE_S * 1000 }")" \
    --load "$LOAD_BEFORE before the runs, $LOAD_AFTER after" \
    --php-fpm "$("$PHP_FPM" -n -v | head -1)" --command "$0 $*"
echo "wrote $OUT" >&2
