#!/usr/bin/env bash
# benches/locks.sh — the accept-lock benchmark (docs/BENCHMARKS.md, "Accept locks (worker
# processes)").
#
# For 4 and 16 worker processes × accept_lock mutex / fcntl / flock / none (and, optionally,
# 4 worker threads × the same four kinds), each a fresh fastpm with pm = "static", the built-in
# `hello` app, a unix socket and backlog 511: 1 s warm-up, then `fastpm bench -c 32 -d 5`, and
# around the measured window the per-worker request counts (the master's `/status?json&full`)
# and the context switches of the workers and of the master (/proc/PID/task/*/status). The
# configurations are interleaved over rounds (the order rotates each round) so that a noisy,
# shared machine hits them all alike; benches/locks_report.py takes medians and per-round
# ratios, prints the table and writes it into docs/BENCHMARKS.md between markers.
#
# Knobs (environment): ROUNDS (3) SECS (5) WARMUP_SECS (1) CLIENTS (32) WORKER_COUNTS ("4 16")
# LOCKS ("mutex fcntl flock none") THREAD_WORKER_COUNTS ("4"; "" skips thread workers)
# OUT (docs/BENCHMARKS.md; "" = only print) KEEP_DIR (copy the raw JSON there).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP_SECS=${WARMUP_SECS:-1}
CLIENTS=${CLIENTS:-32}
WORKER_COUNTS=${WORKER_COUNTS:-"4 16"}
LOCKS=${LOCKS:-"mutex fcntl flock none"}
THREAD_WORKER_COUNTS=${THREAD_WORKER_COUNTS-"4"}
OUT=${OUT-$ROOT/docs/BENCHMARKS.md}
POOL=bench # worker threads are named "$POOL-N"; the thread-mode split below relies on it

WORK=$(mktemp -d /tmp/fastpm-locks.XXXXXX)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "${KEEP_DIR:-}" ]]; then mkdir -p "$KEEP_DIR" && cp "$WORK"/*.jsonl "$KEEP_DIR"/ 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$ROOT" && cargo build --quiet --release --bin fastpm)
FASTPM=$ROOT/target/release/fastpm
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# A free loopback TCP port for the status listener (the kernel picks it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # wait_ready LOGFILE
    for _ in $(seq 1 200); do
        grep -q "ready:" "$1" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$1" >&2; return 1; }
        sleep 0.05
    done
    cat "$1" >&2
    return 1
}

# "VOLUNTARY INVOLUNTARY" context switches of one task directory (/proc/PID/task/TID): a
# voluntary switch is a sleep (on the lock, in accept(), in a read), an involuntary one a
# preemption.
task_ctxt() {
    awk '/^voluntary_ctxt_switches/ { v = $2 } /^nonvoluntary_ctxt_switches/ { n = $2 }
         END { print v + 0, n + 0 }' "$1/status" 2>/dev/null || echo 0 0
}

# ctxt_snapshot MODE MASTER_PID WORKER_PIDS... → JSON of the four sums
# Process mode: the workers are the given pids (all their threads); the master is every thread
# of the master. Thread mode: the workers are the master's threads named "$POOL-N", the master
# is its other threads (main, supervisor, queue sampler, status listener).
ctxt_snapshot() {
    local mode=$1 master=$2 wv=0 wn=0 mv=0 mn=0 t v n
    shift 2
    for t in /proc/"$master"/task/*; do
        read -r v n < <(task_ctxt "$t")
        if [[ $mode == thread && $(cat "$t/comm" 2>/dev/null) =~ ^$POOL-[0-9]+$ ]]; then
            wv=$((wv + v)) wn=$((wn + n))
        else
            mv=$((mv + v)) mn=$((mn + n))
        fi
    done
    if [[ $mode == process ]]; then
        local p
        for p in "$@"; do
            for t in /proc/"$p"/task/*; do
                read -r v n < <(task_ctxt "$t")
                wv=$((wv + v)) wn=$((wn + n))
            done
        done
    fi
    printf '{"workers_voluntary": %d, "workers_involuntary": %d, "master_voluntary": %d, "master_involuntary": %d}' \
        "$wv" "$wn" "$mv" "$mn"
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# Percent of all CPUs busy over the next half second (/proc/stat): taken before each
# configuration starts, it shows what the rest of the machine is doing, unlike the load
# average, which lags by a minute and also counts this run's own threads.
busy_percent() {
    local a b
    a=$(head -1 /proc/stat)
    sleep 0.5
    b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        split(a, x); split(b, y); total = 0
        for (i = 2; i <= 9; i++) total += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", total ? 100 * (total - idle) / total : 0 }'
}

run_one() { # run_one MODE WORKERS LOCK ROUND
    local mode=$1 workers=$2 lock=$3 round=$4
    local name="$mode-$workers-$lock-r$round" port
    port=$(free_port)
    cat >"$WORK/$name.toml" <<CONF
[global]
status_listen = "127.0.0.1:$port"
runtime_dir = "$WORK/rt-$name"
log_level = "info"

[pool.$POOL]
workers = "$mode"
accept_lock = "$lock"
pm = "static"
max_children = $workers

[pool.$POOL.listen]
address = "unix:$WORK/$name.sock"
backlog = 511

[pool.$POOL.app]
kind = "hello"
CONF
    local load_before busy_before status_url="http://127.0.0.1:$port/status?json&full"
    busy_before=$(busy_percent)
    load_before=$(load1)
    env -u LISTENQ RUST_LOG=info "$FASTPM" run -c "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "$WORK/$name.log"
    "$FASTPM" bench "unix:$WORK/$name.sock" -c "$CLIENTS" -d "$WARMUP_SECS" --path /hello >/dev/null

    local status_before status_after ctxt_before ctxt_after pids
    status_before=$(curl -fsS "$status_url" | jq -c '.pools[0]')
    pids=$(jq -r '[.processes[].pid] | unique | .[]' <<<"$status_before")
    # shellcheck disable=SC2086 # one pid per word
    ctxt_before=$(ctxt_snapshot "$mode" "$SERVER_PID" $pids)
    "$FASTPM" bench "unix:$WORK/$name.sock" -c "$CLIENTS" -d "$SECS" --path /hello >"$WORK/$name.bench.json"
    sleep 0.2 # the requests still in flight when the window closed finish
    # shellcheck disable=SC2086
    ctxt_after=$(ctxt_snapshot "$mode" "$SERVER_PID" $pids)
    status_after=$(curl -fsS "$status_url" | jq -c '.pools[0]')

    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=""
    jq -c --arg mode "$mode" --argjson workers "$workers" --arg lock "$lock" \
        --argjson round "$round" --argjson sb "$status_before" --argjson sa "$status_after" \
        --argjson cb "$ctxt_before" --argjson ca "$ctxt_after" \
        --argjson lb "$load_before" --argjson la "$(load1)" --argjson busy "$busy_before" \
        '{mode: $mode, workers: $workers, lock: $lock, round: $round, bench: .,
          requests_before: [$sb.processes[] | {pid, requests}],
          requests_after: [$sa.processes[] | {pid, requests}],
          ctxt_before: $cb, ctxt_after: $ca, load_before: $lb, load_after: $la, busy_before: $busy}' \
        "$WORK/$name.bench.json" >>"$RESULTS"
    echo "round $round: $mode × $workers, $lock: $(jq -r '.ok_per_s | floor' "$WORK/$name.bench.json") ok/s (CPU busy before: $busy_before%, load $(load1))" >&2
}

CONFIGS=()
for w in $WORKER_COUNTS; do for l in $LOCKS; do CONFIGS+=("process $w $l"); done; done
for w in $THREAD_WORKER_COUNTS; do for l in $LOCKS; do CONFIGS+=("thread $w $l"); done; done
n=${#CONFIGS[@]}

STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg) # before this run adds its own load
for ((r = 0; r < ROUNDS; r++)); do
    # Rotate the order each round and reverse it every other round, so no configuration
    # always runs first, last, or right after the same neighbour.
    for ((i = 0; i < n; i++)); do
        j=$(((i + r * n / ROUNDS) % n))
        if ((r % 2 == 1)); then j=$((n - 1 - j)); fi
        # shellcheck disable=SC2086 # "mode workers lock"
        run_one ${CONFIGS[$j]} $((r + 1))
    done
done

# The command line that reproduces this run: the knobs that differ from their defaults.
COMMAND="benches/locks.sh"
for kv in "ROUNDS=3" "SECS=5" "WARMUP_SECS=1" "CLIENTS=32" "WORKER_COUNTS=4 16" \
    "LOCKS=mutex fcntl flock none" "THREAD_WORKER_COUNTS=4"; do
    k=${kv%%=*}
    if [[ "${!k}" != "${kv#*=}" ]]; then COMMAND="$k=\"${!k}\" $COMMAND"; fi
done
python3 "$ROOT/benches/locks_report.py" "$RESULTS" --out "$OUT" --markdown "$ROOT/target/bench-locks.md" \
    --command "$COMMAND" --started "$STARTED" --secs "$SECS" --warmup-secs "$WARMUP_SECS" \
    --clients "$CLIENTS" --load-at-start "$LOAD_AT_START" --commit "$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src || echo ' (uncommitted changes)')"
