#!/usr/bin/env python3
"""benches/locks_report.py — turns the JSON lines written by benches/locks.sh into the accept-lock
table: per (worker kind, worker count, accept_lock) the medians over rounds of throughput,
latency, per-worker request spread and context switches per request, and per-round ratios
against `none` and `mutex`. Prints the table, writes it to --markdown, and puts it into --out
(docs/BENCHMARKS.md) between this script's markers, leaving the rest of the file alone."""

import argparse
import json
import platform
import statistics
import subprocess
import sys

SECTION = "## Accept locks (worker processes)"
BEGIN = "<!-- benches/locks.sh results: begin -->"
END = "<!-- benches/locks.sh results: end -->"
LOCK_ORDER = ["mutex", "fcntl", "flock", "none"]


def measure(row):
    """The figures of one run (one configuration in one round)."""
    bench = row["bench"]
    outcomes = bench.get("outcomes", {})
    before = row["requests_before"]
    after = row["requests_after"]
    # Slots are listed in the same order before and after; a changed pid means the worker was
    # replaced during the window, which a static pool without max_requests must not do.
    restarted = sum(1 for b, a in zip(before, after) if b["pid"] != a["pid"])
    per_worker = [a["requests"] - b["requests"] for b, a in zip(before, after)]
    served = sum(per_worker)
    mean = served / len(per_worker) if per_worker else 0
    lat = bench.get("latency_ms") or {}

    def cs(field):
        """Context switches of `field` per request served in the window."""
        if not served:
            return None
        return (row["ctxt_after"][field] - row["ctxt_before"][field]) / served

    return {
        "ok_per_s": bench["ok_per_s"],
        "errors": bench["requests"] - outcomes.get("ok", 0),
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "min_share": min(per_worker) / mean if mean else None,
        "max_share": max(per_worker) / mean if mean else None,
        "cv": statistics.pstdev(per_worker) / mean if mean else None,
        "cs_workers_vol": cs("workers_voluntary"),
        "cs_workers_invol": cs("workers_involuntary"),
        "cs_master": None
        if cs("master_voluntary") is None
        else cs("master_voluntary") + cs("master_involuntary"),
        "restarted": restarted,
        "loads": [row["load_before"], row["load_after"]],
        "busy": row["busy_before"],
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=0, suffix=""):
    return "–" if x is None else f"{x:.{digits}f}{suffix}"


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ncpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{ncpu} CPUs ({cpu}), Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--out", default="")
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--started", required=True)
    ap.add_argument("--secs", required=True)
    ap.add_argument("--warmup-secs", required=True)
    ap.add_argument("--clients", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--load-at-start", required=True)
    a = ap.parse_args()

    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    runs = {}  # (mode, workers, lock) -> {round: measure}
    for r in rows:
        runs.setdefault((r["mode"], r["workers"], r["lock"]), {})[r["round"]] = measure(r)
    rounds = sorted({r["round"] for r in rows})
    keys = sorted(
        runs,
        key=lambda k: (k[0] != "process", k[1], LOCK_ORDER.index(k[2]) if k[2] in LOCK_ORDER else 9),
    )

    def ratio(key, base_lock):
        base = runs.get((key[0], key[1], base_lock))
        if base is None or key[2] == base_lock:
            return None, []
        per_round = [
            runs[key][n]["ok_per_s"] / base[n]["ok_per_s"]
            for n in rounds
            if n in runs[key] and n in base and base[n]["ok_per_s"]
        ]
        return median(per_round), per_round

    busy = sorted(m["busy"] for v in runs.values() for m in v.values())
    loads = [x for m in (m for v in runs.values() for m in v.values()) for x in m["loads"]]
    out = []
    out.append(f"#### run, {a.started}")
    out.append("")
    out.append(
        f"`{a.command}`: `fastpm bench unix:… -c {a.clients} -d {a.secs} --path /hello` "
        f"(one connection per request) after a {a.warmup_secs} s warm-up, against a fresh "
        "fastpm per configuration (`pm = \"static\"`, `kind = \"hello\"`, unix socket, backlog 511); "
        f"{len(rounds)} round{'' if len(rounds) == 1 else 's'}, configurations interleaved (order rotated and reversed between "
        "rounds); medians over rounds."
    )
    out.append("")
    out.append(f"- machine: {machine()}")
    out.append(
        f"- load average: {a.load_at_start} (1, 5, 15 min) before the run; the 1-min figure "
        f"between {min(loads):.2f} and {max(loads):.2f} during it (this includes the run's own "
        f"{a.clients} client threads and the workers); CPU busy in the half second before each "
        f"configuration started (other jobs on the machine): median {median(busy):.0f}%, "
        f"max {busy[-1]}%"
    )
    out.append(f"- fastpm: commit {a.commit}, release build")
    out.append("")
    out.append(
        "| workers | accept_lock | ok/s | ÷ none | ÷ mutex | errors | p50 / p99 ms | "
        "requests per worker, min / max ÷ mean | CV | ctx switches / request, workers: "
        "voluntary + involuntary | … master |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_round_lines = []
    for key in keys:
        ms = [runs[key][n] for n in rounds if n in runs[key]]
        med = {f: median([m[f] for m in ms]) for f in ms[0] if f not in ("loads", "busy")}
        r_none, pr_none = ratio(key, "none")
        r_mutex, pr_mutex = ratio(key, "mutex")
        errors = sum(m["errors"] for m in ms)
        restarted = sum(m["restarted"] for m in ms)
        label = f"{key[1]} {'processes' if key[0] == 'process' else 'threads'}"
        lock = f"`{key[2]}`" + (f" ({restarted} worker restarts!)" if restarted else "")
        out.append(
            f"| {label} | {lock} | {fmt(med['ok_per_s'])} | {fmt(r_none, 2, '×')} | "
            f"{fmt(r_mutex, 2, '×')} | {errors} | {fmt(med['p50'], 2)} / {fmt(med['p99'], 2)} | "
            f"{fmt(med['min_share'], 2)} / {fmt(med['max_share'], 2)} | "
            f"{fmt(None if med['cv'] is None else 100 * med['cv'], 1, '%')} | "
            f"{fmt(med['cs_workers_vol'], 2)} + {fmt(med['cs_workers_invol'], 2)} | "
            f"{fmt(med['cs_master'], 3)} |"
        )
        per_round_lines.append(
            f"| {label} | `{key[2]}` | "
            + " / ".join(fmt(m["ok_per_s"]) for m in ms)
            + " | "
            + (" / ".join(fmt(x, 2, "×") for x in pr_none) or "–")
            + " | "
            + (" / ".join(fmt(x, 2, "×") for x in pr_mutex) or "–")
            + " |"
        )
    out.append("")
    out.append("Every round, for the record (the ratios are per round, both sides measured seconds apart):")
    out.append("")
    out.append("| workers | accept_lock | ok/s per round | ÷ none per round | ÷ mutex per round |")
    out.append("|---|---|---|---|---|")
    out.extend(per_round_lines)
    table = "\n".join(out) + "\n"

    print(table)
    with open(a.markdown, "w") as f:
        f.write(table)
    if a.out:
        write_into(a.out, table)
        print(f"written into {a.out}", file=sys.stderr)


def write_into(path, table):
    """Replace the text between BEGIN and END in `path`; without the markers, append the section
    with them."""
    try:
        doc = open(path).read()
    except FileNotFoundError:
        doc = ""
    block = f"{BEGIN}\n{table}{END}\n"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + block + tail.lstrip("\n")
        if tail.strip():
            doc = head + block + "\n" + tail.lstrip("\n")
    else:
        doc = doc.rstrip("\n") + f"\n\n{SECTION}\n\n{block}"
    with open(path, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
