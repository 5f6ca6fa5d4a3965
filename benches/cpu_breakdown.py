#!/usr/bin/env python3
# benches/cpu_breakdown.py — where the CPU of a hello.php request goes (docs/BENCHMARKS.md,
# "Where the time goes").
#
# No nginx: `fastpm bench` speaks FastCGI straight to each backend's unix socket (CLIENTS closed-
# loop clients, one connection per request, SCRIPT_FILENAME = php-examples/hello.php), against
#
#   php-fpm                      php-fpm8.2, pm = static, 4 children
#   fastpm php, thread workers, shared php-cgi      kind = "php": 4 worker threads in the master,
#                                                   php_children = "shared" (the default): one
#                                                   php-cgi parent with 4 children
#   fastpm php, process workers, shared php-cgi     the same with 4 worker processes
#   fastpm php, thread workers, php-cgi per worker  php_children = "per-worker": a php-cgi each
#   fastpm php, process workers, php-cgi per worker the same with 4 worker processes
#   fastpm exec                  kind = "exec": 4 php-cgi accepting on the pool socket themselves
#   fastpm php, embedded PHP     php_children = "embedded": PHP (libphp) inside each of 4 worker
#                                processes, no php-cgi
#
# all running PHP with the php.ini INI picks, as root, each server in a session of its own (setsid):
#   INI=none (default)  no php.ini anywhere: php-fpm -n, php-cgi -n (a one-line wrapper, for the
#                       php layouts and exec alike), embedded php_ini = "none" — PHP's bare
#                       defaults, no extension loaded from conf.d (so no opcache)
#   INI=deployed        Debian's php.ini and conf.d as installed (opcache on): php-fpm and php-cgi
#                       without -n (/etc/php/8.2/fpm, /etc/php/8.2/cgi), embedded php_ini = ""
#                       (PHP's own search: /etc/php/8.2/embed) — the same files in all three.
# In each round every backend is measured once (order rotated, reversed every other round).
# Around the measured window, for every thread of every process of the backend's tree (the
# master and all its descendants): utime and stime (/proc/PID/task/TID/stat, clock ticks) and
# voluntary / involuntary context switches (/proc/PID/task/TID/status); the differences are
# grouped by role (master threads that relay, other master threads, worker processes, php-cgi,
# php-fpm master / children) and divided by the requests answered in the window. The client's
# own CPU comes from wait4's rusage. With PERF=1 (default when `perf` runs), `perf stat -e
# task-clock,context-switches,cpu-migrations` covers the same processes in the same window.
# With PROFILE=1 (default with PERF), after the rounds each backend gets one more window under
# `perf record -g` (its whole tree; the symbols that take ≥ 1.5% of its samples) and one under
# `perf sched record` (system-wide; `perf sched latency`: per task kind, switches and the
# average and largest delay between wake-up and running).
#
# Knobs (environment): ROUNDS (3) SECS (5) WARMUP_SECS (1) CLIENTS (8) INI (none/deployed) FASTPM
# (binary; default target/release/fastpm, built if missing) PERF (1/0) OUT (target/bench-cpu.md)
# ONLY (short names, comma-separated: php-fpm and these only; default every layout)

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from proctree import descendants as tree, read

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECS = float(os.environ.get("SECS", "5"))
WARMUP_SECS = float(os.environ.get("WARMUP_SECS", "1"))
CLIENTS = int(os.environ.get("CLIENTS", "8"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "target", "bench-cpu.md"))
PERF = os.environ.get("PERF", "1") == "1" and shutil.which("perf") is not None
PROFILE = PERF and os.environ.get("PROFILE", "1") == "1"
# INI: which php.ini every backend's PHP reads (see the header): (php-fpm and php-cgi flags,
# embedded php_ini, the report's words).
INIS = {
    "none": (["-n"], "none", "PHP without php.ini (php-fpm -n, php-cgi -n, embedded "
                             "php_ini = \"none\")"),
    "deployed": ([], "", "PHP with Debian's php.ini and conf.d, opcache on (php-fpm and php-cgi "
                         "without -n, embedded php_ini = \"\"; /etc/php/8.2/{fpm,cgi,embed})"),
}
INI = os.environ.get("INI", "none")
if INI not in INIS:
    raise SystemExit(f"INI={INI!r}: say none or deployed")
INI_FLAGS, EMBEDDED_INI, INI_TEXT = INIS[INI]
WORKERS = 4
POOL = "hello"  # fastpm names its worker threads POOL-N (the client's threads are bench-N)
PARENT = r"__x64_sys_[a-z0-9_]+|__do_sys_[a-z0-9_]+"
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
DOCROOT = os.path.join(ROOT, "php-examples")
SCRIPT = os.path.join(DOCROOT, "hello.php")
# Every backend the script knows, in report order: (short name for ONLY, name in the report).
ALL_BACKENDS = [("php-fpm", "php-fpm"),
                ("thread-shared", "fastpm php, thread workers, shared php-cgi"),
                ("process-shared", "fastpm php, process workers, shared php-cgi"),
                ("thread", "fastpm php, thread workers, php-cgi per worker"),
                ("process", "fastpm php, process workers, php-cgi per worker"),
                ("exec", "fastpm exec"),
                ("embedded", "fastpm php, embedded PHP")]
# ONLY (comma-separated short names): php-fpm and these, for a look at one layout; the report
# says so. Unset: every layout, as a benchmark run must.
ONLY = [n for n in os.environ.get("ONLY", "").split(",") if n]
if unknown := set(ONLY) - {short for short, _ in ALL_BACKENDS}:
    raise SystemExit(f"ONLY: unknown {sorted(unknown)}; say some of "
                     f"{[short for short, _ in ALL_BACKENDS[1:]]}")
SHORT = [short for short, _ in ALL_BACKENDS if short == "php-fpm" or not ONLY or short in ONLY]
BACKENDS = [name for short, name in ALL_BACKENDS if short in SHORT]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def snapshot(master):
    """{(pid, tid): (process comm, thread comm, ppid, utime, stime, voluntary, involuntary)}."""
    snap = {}
    for pid in tree(master):
        pcomm = (read(f"/proc/{pid}/comm") or "?").strip()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            stat = read(f"/proc/{pid}/task/{tid}/stat")
            status = read(f"/proc/{pid}/task/{tid}/status")
            if not stat or not status:
                continue
            tcomm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
            vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
            inv = int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
            snap[(pid, int(tid))] = (pcomm, tcomm, ppid, utime, stime, vol, inv)
    return snap


def role(backend, master, pid, pcomm, tcomm, ppid):
    if pid == master:
        if backend == 0:
            return "php-fpm master"
        if re.fullmatch(rf"{POOL}-\d+", tcomm):
            return "fastpm worker threads (relay)"
        return "fastpm master, other threads"
    if pcomm.startswith("php-cgi"):
        return "php-cgi"
    if backend == 0:
        return "php-fpm children"
    if BACKENDS[backend].endswith("embedded PHP"):
        return "fastpm worker processes (PHP inside)"
    return "fastpm worker processes (relay)"


def diff(backend, master, before, after):
    """Per role: [utime ticks, stime ticks, voluntary, involuntary, threads]."""
    roles = {}
    for key, a in after.items():
        b = before.get(key, (None, None, None, 0, 0, 0, 0))
        r = roles.setdefault(role(backend, master, key[0], a[0], a[1], a[2]), [0, 0, 0, 0, 0])
        for i in range(4):
            r[i] += a[3 + i] - b[3 + i]
        r[4] += 1
    return roles


class Server:
    def __init__(self, argv, logfile):
        out = open(logfile, "wb")
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTENQ")}
        self.proc = subprocess.Popen(["setsid"] + argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start(work, fastpm):
    # php-cgi with INI's flags (the wrapper execs it, keeping fd 0 and the pid).
    wrapper = os.path.join(work, "php-cgi-ini")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {" ".join(["php-cgi"] + INI_FLAGS)} "$@"\n')
    os.chmod(wrapper, 0o755)
    servers, sockets = [], []
    sock = f"{work}/php-fpm.sock"
    with open(f"{work}/php-fpm.conf", "w") as f:
        f.write(f"[global]\npid = {work}/php-fpm.pid\nerror_log = {work}/php-fpm.log\ndaemonize = no\n\n"
                f"[{POOL}]\nlisten = {sock}\nlisten.backlog = 511\nlisten.mode = 0600\npm = static\n"
                f"pm.max_children = {WORKERS}\npm.max_requests = 0\n")
    servers.append(Server(["/usr/sbin/php-fpm8.2"] + INI_FLAGS + ["-F", "-R", "-y", f"{work}/php-fpm.conf"],
                          f"{work}/php-fpm.stderr"))
    sockets.append(sock)
    php = f'kind = "php"\nphp_cgi = "{wrapper}"\ndocument_root = "{DOCROOT}"\n'
    apps = [
        ("thread-shared", 'workers = "thread"\n', php + 'php_children = "shared"\n'),
        ("process-shared", 'workers = "process"\n', php + 'php_children = "shared"\n'),
        ("thread", 'workers = "thread"\n', php + 'php_children = "per-worker"\n'),
        ("process", 'workers = "process"\n', php + 'php_children = "per-worker"\n'),
        ("exec", "", f'kind = "exec"\ncommand = ["{wrapper}"]\nenv = {{ PHP_FCGI_MAX_REQUESTS = "0" }}\n'),
        ("embedded", 'workers = "process"\n',
         f'kind = "php"\nphp_children = "embedded"\nphp_ini = "{EMBEDDED_INI}"\ndocument_root = "{DOCROOT}"\n'),
    ]
    for name, workers, app in apps:
        if name not in SHORT:
            continue
        sock = f"{work}/fastpm-{name}.sock"
        with open(f"{work}/fastpm-{name}.toml", "w") as f:
            f.write(f'[global]\nstatus_listen = ""\nruntime_dir = "{work}/rt-{name}"\n\n[pool.{POOL}]\n'
                    f'{workers}max_children = {WORKERS}\n\n[pool.{POOL}.listen]\naddress = "unix:{sock}"\n'
                    f'backlog = 511\n\n[pool.{POOL}.app]\n{app}')
        servers.append(Server([fastpm, "run", "-c", f"{work}/fastpm-{name}.toml"], f"{work}/fastpm-{name}.log"))
        sockets.append(sock)
    return servers, sockets


def bench(fastpm, sock, secs):
    """`fastpm bench`: (summary JSON, client rusage: CPU seconds, voluntary and involuntary
    context switches)."""
    proc = subprocess.Popen([fastpm, "bench", f"unix:{sock}", "-c", str(CLIENTS), "-d", str(secs),
                             "--path", "/hello.php", "-p", f"SCRIPT_FILENAME={SCRIPT}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = status
    return json.loads(out), (usage.ru_utime + usage.ru_stime, usage.ru_nvcsw, usage.ru_nivcsw)


def check_body(fastpm, sock):
    out = subprocess.run([fastpm, "request", f"unix:{sock}", "/hello.php", "-p",
                          f"SCRIPT_FILENAME={SCRIPT}"], capture_output=True, timeout=10)
    return out.stdout.endswith(b"\r\n\r\nHello from PHP\n") or out.stdout.endswith(b"\n\nHello from PHP\n"), out.stdout[-200:]


def perf_stat(pids, secs):
    cmd = ["perf", "stat", "-x", ";", "-e", "task-clock,context-switches,cpu-migrations",
           "-p", ",".join(str(p) for p in pids), "--", "sleep", str(secs)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def parse_perf(text):
    values = {}
    for line in text.splitlines():
        parts = line.split(";")
        if len(parts) > 3 and parts[2] in ("task-clock", "context-switches", "cpu-migrations"):
            try:
                values[parts[2]] = float(parts[0])
            except ValueError:
                pass
    return values


def main():
    fastpm = os.environ.get("FASTPM") or os.path.join(ROOT, "target", "release", "fastpm")
    if not os.path.exists(fastpm):
        subprocess.run(["cargo", "build", "--release", "--bin", "fastpm"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="fastpm-cpu.")
    servers, sockets = start(work, fastpm)
    started, load_start = time.time(), loadavg()
    try:
        return run(fastpm, servers, sockets, load_start, started)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(fastpm, servers, sockets, load_start, started):
    deadline = time.time() + 10
    for i, sock in enumerate(sockets):
        while True:
            ok, tail = check_body(fastpm, sock)
            if ok:
                break
            if time.time() > deadline:
                raise SystemExit(f"{BACKENDS[i]} does not answer hello.php: {tail!r}")
            time.sleep(0.2)
    rows = {i: [] for i in range(len(BACKENDS))}
    round_loads = []
    for rnd in range(ROUNDS):
        before_load = loadavg()
        order = [(rnd + k) % len(BACKENDS) for k in range(len(BACKENDS))]
        if rnd % 2:
            order.reverse()
        for i in order:
            master = servers[i].proc.pid
            if WARMUP_SECS:
                bench(fastpm, sockets[i], WARMUP_SECS)
            before = snapshot(master)
            perf = perf_stat(tree(master), SECS + 0.3) if PERF else None
            t0 = time.time()
            summary, client_cpu = bench(fastpm, sockets[i], SECS)
            wall = time.time() - t0
            after = snapshot(master)
            perf_values = parse_perf(perf.communicate()[1]) if perf else {}
            ok = summary["outcomes"].get("ok", 0)
            roles = diff(i, master, before, after)
            ok_body, _ = check_body(fastpm, sockets[i])
            rows[i].append({"ok": ok, "errors": summary.get("requests", ok) - ok, "wall": wall,
                            "roles": roles, "client": client_cpu, "perf": perf_values,
                            "body": ok_body, "summary": summary})
            tot = sum(r[0] + r[1] for r in roles.values()) * TICK_US / max(ok, 1)
            log(f"round {rnd}: {BACKENDS[i]}: {ok / wall:.0f} ok/s, backend {tot:.1f} µs/request, "
                f"perf {perf_values}")
        round_loads.append(f"{before_load} → {loadavg()}")
    report = render(rows, load_start, round_loads, started)
    if PROFILE:
        report += profiles(fastpm, servers, sockets)
    print(report)
    if OUT:
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w") as f:
            f.write(report)
    return 0 if all(r["body"] and r["errors"] == 0 for rs in rows.values() for r in rs) else 1


def profiles(fastpm, servers, sockets):
    """perf record and perf sched latency, one extra window per backend."""
    out = []
    work = tempfile.mkdtemp(prefix="fastpm-perf.")
    try:
        for i, name in enumerate(BACKENDS):
            master = servers[i].proc.pid
            data = os.path.join(work, f"rec{i}.data")
            rec = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-o", data, "-p",
                                    ",".join(str(p) for p in tree(master)), "--", "sleep", str(SECS)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            bench(fastpm, sockets[i], SECS)
            rec.wait()
            top = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "comm,sym",
                                  "--stdio", "-g", "none", "--percent-limit", "1.5"],
                                 capture_output=True, text=True).stdout
            lines = [l for l in top.splitlines() if l.strip() and not l.startswith("#")]
            out.append(f"\n`perf record -F 1999 -g -p <tree>` during `fastpm bench` ({SECS:g} s), "
                       f"{name}; `perf report --no-children --sort comm,sym -g none --percent-limit 1.5`:\n")
            out.append("```\n" + "\n".join(lines[:20]) + "\n```")
            # The same samples grouped by the system call they happened under (the first caller
            # in the chain named like a syscall entry); "[other]" is user space and interrupts.
            by_call = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort",
                                      "comm,parent", "--parent", PARENT, "--stdio", "-g", "none",
                                      "--percent-limit", "1.5"], capture_output=True, text=True).stdout
            lines = [l for l in by_call.splitlines() if l.strip() and not l.startswith("#")]
            out.append(f"\nthe same samples by system call: `perf report --no-children --sort comm,parent "
                       f"--parent '{PARENT}' -g none --percent-limit 1.5`:\n")
            out.append("```\n" + "\n".join(lines[:20]) + "\n```")
            tids = {tid for pid in tree(master) for tid in os.listdir(f"/proc/{pid}/task")}
            sched = os.path.join(work, f"sched{i}.data")
            rec = subprocess.Popen(["perf", "sched", "record", "-o", sched, "--", "sleep", "2"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            bench(fastpm, sockets[i], 2.5)
            rec.wait()
            lat = subprocess.run(["perf", "sched", "latency", "-p", "-i", sched, "--sort", "switch"],
                                 capture_output=True, text=True).stdout
            keep = [l for l in lat.splitlines()
                    if re.match(r"\s*\S+?:(\d+)\s", l) and re.match(r"\s*\S+?:(\d+)\s", l).group(1) in tids]
            out.append(f"\n`perf sched record -- sleep 2` (system-wide) during `fastpm bench`, {name}; "
                       "`perf sched latency -p --sort switch`, the backend's threads only:\n")
            out.append("```\n" + "\n".join(keep[:16]) + "\n```")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(out) + "\n"


def med(values):
    return statistics.median(values) if values else float("nan")


def binary_label():
    """Which fastpm was measured: FASTPM's binary, or the checkout's build and its commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if os.environ.get("FASTPM"):
        return f"fastpm binary {os.environ['FASTPM']} (FASTPM; checkout at {commit})"
    return f"fastpm commit {commit}"


def render(rows, load_start, round_loads, started):
    out = [f"`fastpm bench unix:SOCK -c {CLIENTS} -d {SECS:g} --path /hello.php` (one connection per "
           f"request, no nginx) after a {WARMUP_SECS:g} s warm-up, {ROUNDS} rounds; 4 workers each, "
           f"INI={INI}: {INI_TEXT}; run took {(time.time() - started) / 60:.1f} min"
           + (f"; only {', '.join(SHORT[1:])} beside php-fpm (ONLY)" if ONLY else "")
           + f"; {binary_label()}\n",
           f"- load average: {load_start} at start; per round {' / '.join(round_loads)}",
           "- throughput against php-fpm's in the same round (php-fpm is BACKENDS[0]): median of "
           "the per-round ratios, their range, each round"]
    fpm = [r["ok"] / r["wall"] for r in rows[0]]
    for i, name in enumerate(BACKENDS[1:], start=1):
        ratios = [r["ok"] / r["wall"] / f for r, f in zip(rows[i], fpm)]
        out.append(f"  - {name}: **{med(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f}; "
                   f"{' / '.join(f'{x:.2f}' for x in ratios)})")
    out += [f"- CPU from /proc/PID/task/*/stat (utime + stime, {TICK_US:.0f} µs ticks) over every thread "
           "of the backend's tree, ÷ requests answered in the window; medians over rounds, "
           "per-round values in brackets\n",
           "| backend | ok/s | role | threads | user µs/req | sys µs/req | total µs/req (per round) | "
           "voluntary cs/req | involuntary cs/req |",
           "|---|---:|---|---:|---:|---:|---|---:|---:|"]
    for i, name in enumerate(BACKENDS):
        rs = rows[i]
        rate = med([r["ok"] / r["wall"] for r in rs])
        names = sorted({n for r in rs for n in r["roles"]})
        for n in names + ["whole backend", "client (fastpm bench)"]:
            def per(r, idx):
                if n == "whole backend":
                    return sum(v[idx] for v in r["roles"].values()) / r["ok"]
                return r["roles"].get(n, [0] * 5)[idx] / r["ok"]
            if n == "client (fastpm bench)":
                tot = [r["client"][0] * 1e6 / r["ok"] for r in rs]
                vol = [r["client"][1] / r["ok"] for r in rs]
                inv = [r["client"][2] / r["ok"] for r in rs]
                out.append(f"| {name} | | {n} | {CLIENTS} | | | {med(tot):.1f} "
                           f"({' / '.join(f'{t:.1f}' for t in tot)}) | {med(vol):.2f} | {med(inv):.2f} |")
                continue
            user = [per(r, 0) * TICK_US for r in rs]
            sys_ = [per(r, 1) * TICK_US for r in rs]
            tot = [u + s for u, s in zip(user, sys_)]
            vol = [per(r, 2) for r in rs]
            inv = [per(r, 3) for r in rs]
            threads = max(r["roles"].get(n, [0] * 5)[4] for r in rs) if n != "whole backend" else \
                max(sum(v[4] for v in r["roles"].values()) for r in rs)
            label = f"**{n}**" if n == "whole backend" else n
            out.append(f"| {name} | {rate:.0f} | {label} | {threads} | {med(user):.1f} | {med(sys_):.1f} | "
                       f"{med(tot):.1f} ({' / '.join(f'{t:.1f}' for t in tot)}) | {med(vol):.2f} | {med(inv):.2f} |")
    if PERF:
        out.append("\n`perf stat -e task-clock,context-switches,cpu-migrations -p <every pid of the tree>` "
                   "over the same window (+0.3 s), ÷ requests:\n")
        out.append("| backend | task-clock µs/req (per round) | context switches/req | CPU migrations/req |")
        out.append("|---|---|---:|---:|")
        for i, name in enumerate(BACKENDS):
            rs = [r for r in rows[i] if r["perf"]]
            tc = [r["perf"].get("task-clock", float("nan")) * 1000 / r["ok"] for r in rs]
            cs = [r["perf"].get("context-switches", float("nan")) / r["ok"] for r in rs]
            mig = [r["perf"].get("cpu-migrations", float("nan")) / r["ok"] for r in rs]
            out.append(f"| {name} | {med(tc):.1f} ({' / '.join(f'{t:.1f}' for t in tc)}) | {med(cs):.2f} | {med(mig):.3f} |")
    bad = [BACKENDS[i] for i, rs in rows.items() for r in rs if not r["body"] or r["errors"]]
    out.append("\n- body check (`fastpm request`, before and after each window): "
               + ("every answer `Hello from PHP`, 0 errors" if not bad else f"**FLAGGED**: {sorted(set(bad))}"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
