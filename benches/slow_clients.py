#!/usr/bin/env python3
"""benches/slow_clients.py — what 200 silent connections and 4 drippers cost everyone else.

One fastpm (release build) with the default pool's shape: 4 thread workers (and, as a second
layout, 4 worker processes) running the built-in `hello` app on a unix socket. Alternated
rounds of `fastpm bench -c 8 -d SECS` (one connection per request):
  - clean: nothing else connected;
  - hostile: 200 connections that send nothing, and 4 that send one byte of a FastCGI record
    every DRIP seconds (a slow-loris), all opened before the round and kept through it.
Reports, per layout, throughput and p99 of each round and the hostile/clean ratio (median,
min–max over rounds). Issue 9's target: throughput cost < 10%, a normal request < 100 ms.
Every answer is checked (`fastpm bench` counts only bodies that parse and end properly as ok).

Loopback only, bounded: ROUNDS × 2 × SECS seconds per layout. Knobs (environment): ROUNDS (3),
SECS (5), IDLE (200), DRIPPERS (4), DRIP (5), FASTPM (a fastpm binary; default: cargo build
--release).
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("ROUNDS", 3))
SECS = int(os.environ.get("SECS", 5))
IDLE = int(os.environ.get("IDLE", 200))
DRIPPERS = int(os.environ.get("DRIPPERS", 4))
DRIP = float(os.environ.get("DRIP", 5))


def fastpm_binary():
    if os.environ.get("FASTPM"):
        return os.environ["FASTPM"]
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "fastpm")


def start(fastpm, work, workers):
    conf = os.path.join(work, f"{workers}.toml")
    sock = os.path.join(work, f"{workers}.sock")
    with open(conf, "w") as f:
        f.write(f"""
[global]
status_listen = ""
runtime_dir = "{work}/rt-{workers}"

[pool.www]
workers = "{workers}"
max_children = 4

[pool.www.listen]
address = "unix:{sock}"

[pool.www.app]
kind = "hello"
""")
    log = open(os.path.join(work, f"{workers}.log"), "w")
    proc = subprocess.Popen([fastpm, "run", "-c", conf], stdout=log, stderr=log)
    for _ in range(100):
        with open(log.name) as f:
            if "ready:" in f.read():
                return proc, sock
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"fastpm ({workers}) did not start; see {log.name}")


def bench(fastpm, sock):
    out = subprocess.run(
        [fastpm, "bench", f"unix:{sock}", "-c", "8", "-d", str(SECS)],
        capture_output=True, text=True, check=True,
    ).stdout
    s = json.loads(out)
    ok = s["outcomes"].get("ok", 0)
    return s["ok_per_s"], s["latency_ms"]["p99"], s["requests"] - ok


class Hostile:
    """IDLE silent connections and DRIPPERS slow-loris clients, until closed."""

    def __init__(self, sock):
        self.stop = threading.Event()
        self.idle = []
        for _ in range(IDLE):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)
            self.idle.append(c)
        # The first bytes of a BEGIN_REQUEST record, one at a time.
        begin = bytes([1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        self.threads = []
        for _ in range(DRIPPERS):
            t = threading.Thread(target=self.drip, args=(sock, begin), daemon=True)
            t.start()
            self.threads.append(t)

    def drip(self, sock, begin):
        while not self.stop.is_set():
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)
            try:
                for b in begin * 100:
                    if self.stop.wait(DRIP):
                        return
                    c.send(bytes([b]))
            except OSError:
                pass  # closed by fastpm at its deadline: start again
            finally:
                c.close()

    def close(self):
        self.stop.set()
        for c in self.idle:
            c.close()
        for t in self.threads:
            t.join()


def main():
    fastpm = fastpm_binary()
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="fastpm-slow-") as work:
        for workers in ("thread", "process"):
            proc, sock = start(fastpm, work, workers)
            rows = []
            try:
                for r in range(ROUNDS):
                    clean = bench(fastpm, sock)
                    hostile_clients = Hostile(sock)
                    time.sleep(0.5)
                    hostile = bench(fastpm, sock)
                    hostile_clients.close()
                    rows.append((clean, hostile))
                    print(f"{workers} round {r + 1}: clean {clean[0]:.0f} req/s p99 {clean[1]} ms "
                          f"(failed {clean[2]}); hostile {hostile[0]:.0f} req/s p99 {hostile[1]} ms "
                          f"(failed {hostile[2]})", flush=True)
            finally:
                proc.terminate()
                proc.wait()
            ratios = [h[0] / c[0] for c, h in rows]
            p99 = [h[1] for _, h in rows]
            failed = sum(c[2] + h[2] for c, h in rows)
            print(f"slow_clients: {workers} workers: hostile/clean throughput "
                  f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}), "
                  f"hostile p99 {min(p99)}-{max(p99)} ms, failed {failed}")
            if statistics.median(ratios) < 0.9 or max(p99) >= 100 or failed:
                status = 1
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return status


if __name__ == "__main__":
    sys.exit(main())
