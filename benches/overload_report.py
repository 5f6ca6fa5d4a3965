#!/usr/bin/env python3
"""benches/overload_report.py — turns the JSON lines written by benches/overload.sh into
docs/OVERLOAD.md: the table of goodput, failures by kind and work wasted on clients that had
already left, for fastpm (backlog x overload policy) and php-fpm, measured in one run; and one
SVG figure per backlog (docs/overload-BACKLOG.svg) of accept-queue depth and goodput over time.
The SVG is written with plain Python (no plotting library on the machine, no network)."""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from xml.sax.saxutils import escape

# Figure geometry (px). Two panels share the time axis; the legend sits at the right.
FIG_W, FIG_H = 980, 660
PLOT_X0, PLOT_X1 = 72, 720
QUEUE_Y0, QUEUE_Y1 = 92, 322
GOODPUT_Y0, GOODPUT_Y1 = 382, 612
LEGEND_X = 742

# One style per series: colour, dash pattern, and drawing order (the collapsing series last, on
# top, since the shedding ones overlap each other near capacity).
STYLES = {
    "deadline": ("#1f77b4", "", 1),
    "codel": ("#2ca02c", "", 2),
    "codel-target": ("#ff7f0e", "", 3),
    "none": ("#9467bd", "", 4),
    "php-fpm": ("#d62728", "", 5),
}

LEGEND_ORDER = ["none", "deadline", "codel", "codel-target", "php-fpm"]


def nice_step(span, target=5):
    """A tick step of 1, 2 or 5 x 10^k giving about `target` ticks over `span`."""
    if span <= 0:
        return 1
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def fmt_tick(v):
    return f"{v:g}"


def series_key(row):
    if row["server"] == "php-fpm":
        return "php-fpm"
    policy = row["policy"]
    return "codel-target" if policy.startswith("codel:") else policy


def series_label(row, a):
    if row["server"] == "php-fpm":
        return "php-fpm 8.2"
    policy = row["policy"]
    if policy == "none":
        return "fastpm, no policy"
    if policy == "deadline":
        return f"fastpm, deadline {a.deadline_ms} ms"
    if policy == "codel":
        return f"fastpm, codel target {a.codel.split('/')[0]}"
    if policy.startswith("codel:"):
        return f"fastpm, codel target {policy.split(':', 1)[1]}"
    return f"fastpm, {policy}"


def queue_points(row, secs):
    """(seconds, depth) samples taken while the load ran."""
    return [(t / 1000, d) for t, d in row.get("queue", []) if 0 <= t <= secs * 1000]


def segments(points, max_gap):
    """Split a time series where consecutive samples are more than `max_gap` apart (the sampler
    was starved of CPU): a line across the gap would show values nobody measured."""
    out = []
    for p in points:
        if out and p[0] - out[-1][-1][0] <= max_gap:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def goodput_points(row, secs):
    """(bin centre in seconds, ok answers per second) for every whole bin inside the run."""
    bench = row["bench"]
    step = bench.get("timeline_ms")
    if not step:
        return []
    return [
        ((b["t_ms"] + step / 2) / 1000, b.get("ok", 0) * 1000 / step)
        for b in bench.get("timeline", [])
        if b["t_ms"] + step <= secs * 1000
    ]


class Panel:
    """One plotting area: maps data to pixels and draws its frame, grid and ticks."""

    def __init__(self, y0, y1, xmax, ymax):
        self.y0, self.y1, self.xmax = y0, y1, xmax
        self.ystep = nice_step(ymax)
        self.ymax = max(self.ystep, math.ceil(ymax / self.ystep) * self.ystep)

    def px(self, x):
        return PLOT_X0 + (PLOT_X1 - PLOT_X0) * x / self.xmax

    def py(self, y):
        return self.y1 - (self.y1 - self.y0) * min(y, self.ymax) / self.ymax

    def frame(self, title, ylabel, show_x_labels):
        out = [f'<text x="{PLOT_X0}" y="{self.y0 - 10}" font-size="14" font-weight="bold">'
               f"{escape(title)}</text>"]
        y = 0.0
        while y <= self.ymax + 1e-9:
            yy = self.py(y)
            out.append(f'<line x1="{PLOT_X0}" y1="{yy:.1f}" x2="{PLOT_X1}" y2="{yy:.1f}" '
                       f'stroke="#e3e3e3"/>')
            out.append(f'<text x="{PLOT_X0 - 6}" y="{yy + 4:.1f}" text-anchor="end">'
                       f"{fmt_tick(y)}</text>")
            y += self.ystep
        xstep = nice_step(self.xmax, 8)
        x = 0.0
        while x <= self.xmax + 1e-9:
            xx = self.px(x)
            out.append(f'<line x1="{xx:.1f}" y1="{self.y0}" x2="{xx:.1f}" y2="{self.y1 + 4}" '
                       f'stroke="#e3e3e3"/>')
            if show_x_labels:
                out.append(f'<text x="{xx:.1f}" y="{self.y1 + 18}" text-anchor="middle">'
                           f"{fmt_tick(x)}</text>")
            x += xstep
        out.append(f'<rect x="{PLOT_X0}" y="{self.y0}" width="{PLOT_X1 - PLOT_X0}" '
                   f'height="{self.y1 - self.y0}" fill="none" stroke="#444"/>')
        mid = (self.y0 + self.y1) / 2
        out.append(f'<text transform="translate(20 {mid:.1f}) rotate(-90)" text-anchor="middle">'
                   f"{escape(ylabel)}</text>")
        return out

    def polyline(self, points, colour, dash="", width=1.8):
        if not points:
            return []
        if len(points) == 1:
            x, y = points[0]
            return [f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="2" fill="{colour}"/>']
        coords = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        return [f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                f'stroke-width="{width}" stroke-linejoin="round"{dash_attr}/>']

    def reference(self, y, label, outside=False, colour="#555"):
        """A dashed horizontal line, labelled above its right end inside the panel, or (where
        the data runs along the line) right of the panel."""
        yy = self.py(y)
        line = (f'<line x1="{PLOT_X0}" y1="{yy:.1f}" x2="{PLOT_X1}" y2="{yy:.1f}" '
                f'stroke="{colour}" stroke-dasharray="6 4"/>')
        if outside:
            return [line] + [
                f'<text x="{PLOT_X1 + 8}" y="{yy + 4 + 15 * i:.1f}" fill="{colour}">'
                f"{escape(part)}</text>" for i, part in enumerate(label.split("\n"))]
        return [line, f'<text x="{PLOT_X1 - 4}" y="{yy - 5:.1f}" text-anchor="end" '
                      f'fill="{colour}">{escape(label)}</text>']


def figure(backlog, rows, a, capacity):
    """The SVG text of one backlog's figure: queue depth (top) and goodput (bottom) over time."""
    secs = float(a.secs)
    rows = sorted(rows, key=lambda r: STYLES.get(series_key(r), ("", "", 0))[2])
    queues = {r["name"]: queue_points(r, secs) for r in rows}
    goodputs = {r["name"]: goodput_points(r, secs) for r in rows}
    qmax = max([d for pts in queues.values() for _, d in pts] + [1])
    cap = backlog + 1
    show_cap = cap <= qmax * 1.3
    queue_panel = Panel(QUEUE_Y0, QUEUE_Y1, secs, max(qmax, cap) if show_cap else qmax)
    gmax = max([g for pts in goodputs.values() for _, g in pts] + [capacity])
    goodput_panel = Panel(GOODPUT_Y0, GOODPUT_Y1, secs, gmax * 1.05)
    step = rows[0]["bench"].get("timeline_ms", "?") if rows else "?"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{FIG_W}" height="{FIG_H}" '
           f'viewBox="0 0 {FIG_W} {FIG_H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
           f'font-size="12" fill="#222">',
           f'<rect width="{FIG_W}" height="{FIG_H}" fill="#fff"/>',
           f'<text x="{PLOT_X0}" y="28" font-size="17" font-weight="bold">'
           f"Backlog {backlog}: {a.clients} clients, {a.workers} workers × {a.work_ms} ms, "
           f"client timeout {a.timeout_ms} ms</text>",
           f'<text x="{PLOT_X0}" y="50" fill="#555">One invocation of benches/overload.sh, same '
           f"machine; each line is a separate {a.secs} s run. Gaps: no queue sample (sampler "
           f"starved of CPU).</text>"]
    out += queue_panel.frame(
        f"Accept queue depth (ss -lnx Recv-Q, sampled every {a.queue_sample_ms} ms)",
        "connections waiting", False)
    if show_cap:
        out += queue_panel.reference(cap, f"queue full ({cap} = backlog + 1)")
    out += goodput_panel.frame(
        f"Goodput: answers that reached the client in time, per {step} ms", "ok answers / s",
        True)
    out.append(f'<text x="{(PLOT_X0 + PLOT_X1) / 2}" y="{GOODPUT_Y1 + 38}" '
               f'text-anchor="middle">seconds since the load started</text>')
    out += goodput_panel.reference(
        capacity, f"- - capacity: {capacity:.0f}/s\n(baseline run)", outside=True)
    for r in rows:
        colour, dash, _ = STYLES.get(series_key(r), ("#000", "", 0))
        for segment in segments(queues[r["name"]], 3 * float(a.queue_sample_ms) / 1000):
            out += queue_panel.polyline(segment, colour, dash)
        out += goodput_panel.polyline(goodputs[r["name"]], colour, dash)

    # Legend, in the order of the table: fastpm policies, then php-fpm.
    out.append(f'<text x="{LEGEND_X}" y="{QUEUE_Y0 + 4}" font-weight="bold">Server, policy</text>')
    y = QUEUE_Y0 + 26
    for r in sorted(rows, key=lambda r: LEGEND_ORDER.index(series_key(r))
                    if series_key(r) in LEGEND_ORDER else len(LEGEND_ORDER)):
        colour, dash, _ = STYLES.get(series_key(r), ("#000", "", 0))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{LEGEND_X}" y1="{y - 4}" x2="{LEGEND_X + 26}" y2="{y - 4}" '
                   f'stroke="{colour}" stroke-width="3"{dash_attr}/>')
        out.append(f'<text x="{LEGEND_X + 34}" y="{y}">{escape(series_label(r, a))}</text>')
        y += 22
    out.append("</svg>")
    return "\n".join(out) + "\n"


def second_half(rows, a):
    """Per series, over the second half of the run: median queue depth and mean goodput — the
    state the run settled in, for the caption under each figure."""
    secs = float(a.secs)
    parts = []
    for r in rows:
        q = [d for t, d in queue_points(r, secs) if t >= secs / 2]
        g = [v for t, v in goodput_points(r, secs) if t >= secs / 2]
        if not q or not g:
            continue
        parts.append(f"{series_label(r, a)}: queue {statistics.median(q):.0f}, "
                     f"{statistics.mean(g):.0f} ok/s")
    return "; ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for name in ("clients", "secs", "timeout-ms", "work-ms", "workers", "deadline-ms"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--codel", required=True)
    ap.add_argument("--queue-sample-ms", required=True)
    ap.add_argument("--load", default="not recorded", help="load averages during the run")
    ap.add_argument("--date", help="when the runs were made (default: now), for regenerating")
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

    figures = []
    out_dir = os.path.dirname(os.path.abspath(a.out))
    backlogs = sorted({r["backlog"] for r in rows if r["name"] != "baseline"})
    for backlog in backlogs:
        group = [r for r in rows if r["name"] != "baseline" and r["backlog"] == backlog]
        if not any(r["bench"].get("timeline") for r in group):
            continue
        name = f"overload-{backlog}.svg"
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(figure(backlog, group, a, capacity))
        figures.append(
            f"![Backlog {backlog}: accept queue depth and goodput over time, php-fpm and fastpm "
            f"per policy]({name})\n\n*Backlog {backlog}, second half of each run "
            f"(median queue depth, mean goodput) — {second_half(group, a)}.*")
    over_time = "\n\n".join(figures) if figures else "(no timeline in these results)"

    kernel = platform.release()
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    now = a.date or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = f"""# Overload: backlog, queue wait and shedding

What happens when more work arrives than a pool can do, measured side by side in one run
(`{a.command.strip()}`, {now}, Linux {kernel}, {cpus} CPUs shared with other jobs, debug build;
load average (1/5/15 min) {a.load}).

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

## Over time

One figure per backlog, drawn by the script from the same runs as the table. Top panel: how
many connections wait in the listener's kernel accept queue — Recv-Q of `ss -lnx`, sampled by
the script every {a.queue_sample_ms} ms while the load runs, the same way for php-fpm (whose own
status page shows 0 for a unix socket) and fastpm. Bottom panel: goodput, the answers that
reached their client before its {a.timeout_ms} ms timeout, per interval of `fastpm bench
--timeline-ms`, against the pool's capacity measured by the baseline run (dashed).

{over_time}

What the figures show (the captions' numbers are this run's; the shapes have been the same in
every quiet run): with backlog 64 every server stays at capacity — the queue is always full
(65) and the excess is turned away at `connect()` (the EAGAIN column, nginx's 502). With backlog
511 or 4096 and no policy, php-fpm and fastpm both serve at capacity for exactly one client
timeout, then goodput falls to about zero and stays there: from then on every request waits
about as long as its client's timeout. php-fpm's queue climbs by about 120 connections each
second — the connections of clients that already left stay queued, and it runs every one —
until it reaches backlog + 1 (511: EAGAIN from then on) or keeps climbing (4096); fastpm's stays
near the number of clients because it drops departed connections unrun. With `deadline` or
`codel` the queue is just as deep (about {a.clients} connections: every client is waiting) yet,
on a quiet machine, goodput stays near capacity: what hurts is not how many wait but how long,
and shedding the excess with a quick 503 keeps the wait below the client's timeout. When other
jobs take the two CPUs (see the load average above; gaps in the queue lines mark where even the
sampler got no CPU), the shedding runs lose goodput first — the workers and the 200 client
threads compete for the same CPUs — codel with the 5 ms target most.

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
