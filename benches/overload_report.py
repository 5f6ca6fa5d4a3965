#!/usr/bin/env python3
"""benches/overload_report.py — turns the JSON lines written by benches/overload.sh into
docs/OVERLOAD.md: the table of goodput, failures by kind and work wasted on clients that had
already left, for fastpm (backlog x overload policy) and php-fpm, measured in one run."""

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for name in ("clients", "secs", "timeout-ms", "work-ms", "workers", "deadline-ms"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--codel", required=True)
    ap.add_argument("--php-fpm", required=True)
    ap.add_argument("--command", required=True)
    a = ap.parse_args()

    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    baseline = next(r for r in rows if r["name"] == "baseline")
    capacity = baseline["bench"]["ok_per_s"]
    theory = int(a.workers) * 1000 / int(a.work_ms)

    def fmt(x, digits=0):
        return "–" if x is None else f"{x:.{digits}f}"

    lines = []
    head = ("| server | backlog | policy | ok/s | % of capacity | ok | timeout | EAGAIN | 503 | "
            "p50 / p99 ms (answered) | app runs | ran for gone clients | abandoned (skipped) | "
            "shed | queue wait p50 / p99 ms | max listen queue |")
    lines.append(head)
    lines.append("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    summary = {}
    for r in rows:
        if r["name"] == "baseline":
            continue
        b, s = r["bench"], r["status"]
        o = b["outcomes"]
        ok = o.get("ok", 0)
        accepted = s.get("accepted conn", 0)
        if r["server"] == "php-fpm":
            accepted -= 1  # the status request itself
            shed = abandoned = None
            runs = accepted
            qw = "not measured"
        else:
            shed = s.get("shed requests", 0)
            abandoned = s.get("abandoned requests", 0)
            runs = accepted - shed - abandoned
            p50, p99 = s.get("queue wait p50 ms"), s.get("queue wait p99 ms")
            qw = f"{fmt(p50)} / {fmt(p99)}"
        wasted = max(runs - ok, 0)
        lat = b.get("latency_ms") or {}
        share = 100 * b["ok_per_s"] / capacity if capacity else 0
        summary[r["name"]] = share
        other = sum(v for k, v in o.items() if k not in ("ok", "timeout", "eagain", "503"))
        lines.append(
            f"| {r['server']} | {r['backlog']} | {r['policy']} | {b['ok_per_s']:.1f} | "
            f"**{share:.0f}%** | {ok} | {o.get('timeout', 0)} | {o.get('eagain', 0)} | "
            f"{o.get('503', 0)}{' (+' + str(other) + ' other)' if other else ''} | "
            f"{fmt(lat.get('p50'))} / {fmt(lat.get('p99'))} | {runs} | "
            f"{wasted} ({100 * wasted / runs:.0f}%) | {fmt(abandoned) if abandoned is not None else '–'} | "
            f"{fmt(shed) if shed is not None else '–'} | {qw} | {s.get('max listen queue', '–')} |"
            if runs else
            f"| {r['server']} | {r['backlog']} | {r['policy']} | {b['ok_per_s']:.1f} | {share:.0f}% | {ok} | – | – | – | – | 0 | – | – | – | {qw} | – |"
        )

    kernel = platform.release()
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = f"""# Overload: backlog, queue wait and shedding

What happens when more work arrives than a pool can do, measured side by side in one run
(`{a.command.strip()}`, {now}, Linux {kernel}, {cpus} CPUs shared with other jobs, debug build).

## The experiment

- **Load**: `fastpm bench` with {a.clients} closed-loop clients for {a.secs} s each run, one
  connection per request over a unix socket, connecting the way nginx does (non-blocking
  `connect()`: a full queue answers `EAGAIN` at once, nginx's 502) and giving up after
  {a.timeout_ms} ms (nginx's `fastcgi_read_timeout`: the client closes the connection, the user
  sees a 504). After an instant failure (EAGAIN, 503) a client pauses 10 ms, like a user
  reloading.
- **Work**: {a.workers} workers, {a.work_ms} ms per request (fastpm: the built-in `sleep` app;
  php-fpm: a PHP script calling `usleep({int(a.work_ms) * 1000})`).
- **Capacity**: {a.workers} workers / {a.work_ms} ms = {theory:.0f} requests/s in theory;
  measured by a baseline run (fastpm, exactly {a.workers} clients, no queue):
  **{capacity:.1f} ok/s**. "% of capacity" below is ok answers per second / that baseline.
- **Offered load**: {a.clients} clients against {a.workers} workers; if every client waited its
  full timeout, {int(a.clients) * 1000 / int(a.timeout_ms):.0f} requests/s would arrive —
  {int(a.clients) * 1000 / int(a.timeout_ms) / theory:.1f}× capacity, the php-fpm overload of
  DESIGN.md §1.
- **fastpm policies**: `none`; `deadline` with `max_queue_wait = "{a.deadline_ms}ms"` (half the
  client timeout); `codel` with target/interval `{a.codel}` (the defaults).
- **php-fpm**: {a.php_fpm}, `pm = static`, same backlogs. php-fpm does not measure queue wait
  and cannot tell a waiting client from a departed one: every request it accepts runs.

Columns: *ok* = answered 2xx before the client's timeout; *timeout* = client gave up;
*EAGAIN* = queue full at connect; *503* = shed by the policy (FCGI_OVERLOADED);
*app runs* = requests the app actually ran (`accepted conn` − shed − abandoned; php-fpm: its
`accepted conn`); *ran for gone clients* = app runs − ok: work whose answer nobody read;
*abandoned (skipped)* = requests whose client had left before a worker took them, which fastpm
skipped; *queue wait* = fastpm's own measurement (DESIGN.md §4), from the status page.

## Results

{chr(10).join(lines)}

## Reading it

- With no policy, a long queue is the problem, not the cure: at backlog 511 or 4096 requests
  wait about as long as the client's timeout, so most answers go to nobody. fastpm still skips
  the requests whose client left *before* a worker took them (`abandoned`); php-fpm runs them
  all.
- A connection whose client has left stays in the accept queue until a worker takes it. php-fpm,
  which runs everything it takes, drains those slowly, so departed clients fill even a
  511-slot queue with only 200 clients alive (the EAGAIN column); fastpm takes them off at the
  cost of one `recv` each.
- A short backlog (64) bounds the wait — the excess gets an instant EAGAIN (502) instead of a
  late 504 — at the cost of turning users away even when the queue would have drained in time.
- `deadline` and `codel` keep the queue wait short whatever the backlog: the excess gets a
  cheap 503 with `Retry-After`, the workers spend their time on requests that can still be
  answered in time. Shedding is work-conserving: a request with nobody queued behind it is run,
  not shed.
- CoDel's `target` should be comparable to the service time. With the default 5 ms against a
  50 ms request, once the wait has stood above 5 ms for 100 ms every queued request older than
  5 ms is shed: the queue empties in a burst of 503s and refills as clients come back. That is
  cheap when the machine has CPU to spare, but it is the configuration most sensitive to a busy
  machine: in runs made while other jobs were compiling on the same two CPUs, `codel` with the
  5 ms target lost the most capacity, while the `codel:50ms` rows (target = the service time)
  stayed close to capacity.
- The machine is small and shared (the load generator's 200 threads and the EAGAIN retries
  compete with the servers for the same CPUs): expect a few percent of noise between runs,
  more when other jobs run.

## How fastpm knows the queue wait, and what it does with it

- **Queue wait without client help** (`src/overload/arrival.rs`): the accept queue is FIFO.
  The master's sampler reads the queue depth through `sock_diag` every 2 ms while busy and
  records `arrived = accepted + queued` with the time in a ring of 4096 samples in shared
  memory (only samples where `arrived` grew: a repeat can never be the first sample counting a
  connection, and a connection's arrival sample is then at most `backlog` stored samples old
  when it is accepted — 4096 is the default `somaxconn`). A worker takes sequence number k at
  `accept()`; connection k arrived at the first sample with `arrived ≥ k`. The wait reported is
  the lower bound `accept − that sample's time` (true wait minus at most one sampling
  interval), so a policy never sheds on an over-estimate. Arrivals older than the ring, or
  while the sampler is stalled, are counted as unknown, never guessed.
- **Histogram** (`src/overload/histogram.rs`): 79 log-spaced buckets of atomics per pool (four
  per doubling from 0.1 ms to ≈62 s, plus overflow); `queue wait p50/p99/max ms` on the status
  page, `fastpm_queue_wait_seconds` (an OpenMetrics histogram) on `/metrics`.
- **Abandoned requests** (`src/worker/request.rs`): once a request is read, before the app
  starts, a non-blocking `recv(MSG_PEEK)` that returns 0 means the client has closed: the
  request is skipped and counted.
- **Policies** (`src/overload/policy.rs`, pure): `deadline` sheds a request that waited longer
  than `max_queue_wait`; `codel` sheds while the wait has stayed above `target` for `interval`
  (state per pool in shared memory). A shed request gets `Status: 503`, `Retry-After: 1` and
  END_REQUEST with `FCGI_OVERLOADED`, without touching the app. Status and ping requests are
  never shed.

Reproduce: `benches/overload.sh` (about {(len(rows)) * (int(a.secs) + 2)} s). Knobs: see the
script's header. Raw JSON of every run: set `KEEP_DIR`.
"""
    with open(a.out, "w") as f:
        f.write(doc)
    for name, share in summary.items():
        print(f"{name}: {share:.0f}% of capacity", file=sys.stderr)


if __name__ == "__main__":
    main()
