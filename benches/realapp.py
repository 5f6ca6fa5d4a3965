#!/usr/bin/env python3
# benches/realapp.py — the real-application benchmark (docs/BENCHMARKS.md, "A real application:
# DokuWiki").
#
# Debian's DokuWiki package (a flat-file wiki: no database) is installed with apt-get when
# missing, and its `wiki:syntax` page (≈ 58 KB of HTML, DokuWiki's own manual) is served through
# nginx, configured the Debian way (`include snippets/fastcgi-php.conf`, nginx workers running as
# www-data), by each backend (ALL_BACKENDS; short names for ONLY), all with PHP's Debian php.ini
# (opcache on) and every PHP process running as www-data, 4 workers each:
#
#   php-fpm          php-fpm8.2, pool `user = www-data`, pm = static
#   thread-shared    kind = "php", workers = "thread", php_children = "shared", user = "www-data"
#   process-shared   the same with workers = "process"
#   thread           kind = "php", workers = "thread", php_children = "per-worker"
#   process          the same with workers = "process"
#   exec             kind = "exec", 4 php-cgi accepting on the pool socket themselves
#   process-embedded kind = "php", workers = "process", php_children = "embedded": PHP (libphp,
#                    Debian's libphp8.2-embed) inside each of the 4 worker processes, no php-cgi;
#                    php_ini left at "" (PHP's own search: /etc/php/8.2/embed/php.ini + conf.d,
#                    the same files as php-fpm's /etc/php/8.2/fpm)
#   exec-children    kind = "exec", max_children = 1: one php-cgi with PHP_FCGI_CHILDREN=4
#                    (not run unless named in ONLY)
#
# each once with `fastcgi_keep_conn off` (a FastCGI connection per request) and once with
# upstream `keepalive 4` + `fastcgi_keep_conn on` (a separate instance of each backend per
# keep_conn layout: nginx's idle kept connections would hold the workers of a backend shared by
# both layouts, and the other layout would measure an empty pool), measured in rounds (order
# rotated, reversed every other round). Per scenario and round: wrk's requests/s and p99, the PSS
# of the backend's whole process tree (sum of `Pss:` in /proc/PID/smaps_rollup over the master
# and every descendant, sampled in the middle of the measured window), the tree's CPU time per
# request (utime + stime of every process of the tree over the window, divided by wrk's request
# count), wrk's connections in service on average (Little's law: requests/s × mean latency of
# the answered requests; below CONNECTIONS some connections waited on requests that were never
# answered in the window, so p99 — of answered requests only — flatters that backend: php-fpm
# with keep_conn on, whose children each stay with one of nginx's cached connections), and every
# body compared with php-fpm's after normalising the one thing that changes between requests
# (see NORMALISE).
#
# Knobs (environment): ROUNDS (3) SECS (8) WARMUP_SECS (2) CONNECTIONS (16) PAGE
# (/doku.php?id=wiki:syntax) ONLY (backends besides php-fpm, comma-separated short names; default
# all but exec-children) KEEP (keep_conn layouts: off,on) FASTPM (path of the fastpm binary;
# default: cargo build --release) OUT (target/bench-realapp.md) KEEP_DIR. With the defaults a run
# takes 14 scenarios × 10 s × 3 ≈ 7.5 min.
# Exit status 0 when every scenario ran with right bodies and no errors, 1 otherwise (the table is
# still written, with NOT RUN and the reason where a backend could not serve).

import hashlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from proctree import descendants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECS = int(os.environ.get("SECS", "8"))
WARMUP_SECS = int(os.environ.get("WARMUP_SECS", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
PAGE = os.environ.get("PAGE", "/doku.php?id=wiki:syntax")
OUT = os.environ.get("OUT", os.path.join(ROOT, "target", "bench-realapp.md"))
WORKERS = 4
DOCROOT = "/usr/share/dokuwiki"
# Every request carries this Host header, so the page's absolute URLs name the same host
# whichever nginx port served it (DokuWiki keys its render cache on HTTP_HOST and SERVER_PORT).
HOST = "dokuwiki.bench"
# Every backend the script knows, in report order: (short name for KEEP/ONLY, name in the report).
ALL_BACKENDS = [
    ("php-fpm", "php-fpm"),
    ("thread-shared", "fastpm php, thread workers, shared php-cgi"),
    ("process-shared", "fastpm php, process workers, shared php-cgi"),
    ("thread", "fastpm php, thread workers, php-cgi per worker"),
    ("process", "fastpm php, process workers, php-cgi per worker"),
    ("exec", "fastpm exec"),
    ("process-embedded", "fastpm php, process workers, embedded PHP"),
    ("exec-children", "fastpm exec, 1 php-cgi with PHP_FCGI_CHILDREN=4"),
]
# ONLY: the short names to run (comma-separated; php-fpm always runs, it is the reference).
# Default: every backend but exec-children (php-cgi's own manager without fastpm's workers,
# a reference for the shared layout's memory).
ONLY = [s for s in os.environ.get(
    "ONLY", ",".join(s for s, _ in ALL_BACKENDS if s != "exec-children")).split(",") if s]
SELECTED = [(s, n) for s, n in ALL_BACKENDS if s == "php-fpm" or s in ONLY]
BACKENDS = [n for _, n in SELECTED]
SLUGS = [s for s, _ in SELECTED]
# KEEP: the keep_conn layouts to run ("off,on").
KEEPS = [k for k in os.environ.get("KEEP", "off,on").split(",") if k]
# The socket file of each scenario's backend, in the work directory (see start_backends).
SOCKET_NAMES = {(b, keep): f"{slug}-{keep}" for b, slug in enumerate(SLUGS) for keep in KEEPS}
# What differs between two correct answers of the same page: DokuWiki's task-runner image URL
# ends with the current Unix time (`lib/exe/taskrunner.php?id=wiki%3Asyntax&amp;1796164997`).
# Both this script and wrk's Lua check replace that number with "T"; nothing else is touched.
NORMALISE = (rb"(taskrunner\.php\?[^\"]*?&amp;)[0-9]+", rb"\1T")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def need(binary, package):
    if shutil.which(binary) is None and not os.path.exists(binary):
        log(f"installing {package} (no {binary})")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                       check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def install_dokuwiki():
    if os.path.exists(os.path.join(DOCROOT, "doku.php")):
        return
    # The package offers to configure apache2/lighttpd: answer "none" so no web server of the
    # machine is touched; nginx here gets its own generated config.
    subprocess.run(["debconf-set-selections"], check=True, text=True,
                   input="dokuwiki dokuwiki/system/configure-webserver multiselect \n"
                         "dokuwiki dokuwiki/system/restart-webserver boolean false\n")
    need(os.path.join(DOCROOT, "doku.php"), "dokuwiki")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pss_by_mapping(pid):
    """Pss (KiB) over the tree rooted at pid, per mapping name (/proc/PID/smaps; anonymous
    mappings without a name are "[anon]")."""
    totals = {}
    for p in descendants(pid):
        name = None
        try:
            with open(f"/proc/{p}/smaps") as f:
                for line in f:
                    first = line.split(None, 1)[0]
                    if "-" in first and not first.endswith(":"):
                        parts = line.split(None, 5)
                        name = parts[5].strip() if len(parts) > 5 else "[anon]"
                    elif first == "Pss:":
                        totals[name] = totals.get(name, 0) + int(line.split()[1])
        except OSError:
            pass
    return totals


def pss_kib(pid):
    """Sum of Pss over the process tree rooted at pid, and how many processes that was."""
    total, count = 0, 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        count += 1
                        break
        except OSError:
            pass
    return total, count


class Server:
    """A server started by setsid (a session and process group of its own, as a service manager
    starts it); SIGTERM to its group on stop, SIGKILL after 5 s."""

    def __init__(self, name, argv, logfile):
        self.name = name
        out = open(logfile, "wb")
        self.proc = subprocess.Popen(["setsid"] + argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=server_env())
        self.logfile = logfile

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def server_env():
    env = dict(os.environ)
    for name in ("NOTIFY_SOCKET", "LISTENQ"):
        env.pop(name, None)
    return env


def fetch(port, path):
    """(status, body) of one GET with curl."""
    out = subprocess.run(["curl", "-s", "--max-time", "10", "-H", f"Host: {HOST}",
                          "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True)
    body, _, status = out.stdout.rpartition(b"\n")
    return int(status or 0), body


def normalise(body):
    return re.sub(NORMALISE[0], NORMALISE[1], body)


def wait_ready(port, name):
    deadline = time.time() + 20
    while True:
        status, body = fetch(port, PAGE)
        if status == 200 and b"</html>" in body:
            return body
        if time.time() > deadline:
            return RuntimeError(f"{name} answers status {status}: "
                                f"{body[:120].decode(errors='replace')!r}")
        time.sleep(0.2)


def lua_check(expected):
    """wrk script: counts the bodies that differ from `expected` once normalised like
    NORMALISE, and prints the total over wrk's threads as BAD_BODIES."""
    literal = "".join(f"\\{b}" for b in expected)
    return f"""
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
local expected = "{literal}"
function response(status, headers, body)
  local normal = string.gsub(body, '(taskrunner%.php%?[^"]-&amp;)%d+', '%1T')
  if normal ~= expected then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("BAD_BODIES %d\\n", total))
end
"""


def first_error(logfile):
    """The first ERROR line of a server's log, to say why it does not serve."""
    try:
        with open(logfile, errors="replace") as f:
            for line in f:
                if " ERROR " in line:
                    return "; its log: " + line.strip().split(" ERROR ", 1)[1][:200]
    except OSError:
        pass
    return ""


def parse_ms(text):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def cpu_seconds(pid):
    """utime + stime (every thread) summed over the process tree rooted at pid, in seconds."""
    ticks = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(port, secs, lua, sample_pid=None):
    """One wrk run; when sample_pid is given, the tree's PSS is read halfway through, and the
    CPU time the tree used over the run is divided by the requests wrk counted (a figure that
    other load on the machine changes far less than requests/s: CPU a backend does not get
    lowers its throughput, not its CPU per request)."""
    cpu_before = cpu_seconds(sample_pid) if sample_pid is not None else None
    proc = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{secs}s", "--latency",
                             "-H", f"Host: {HOST}", "-s", lua, f"http://127.0.0.1:{port}{PAGE}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pss = None
    if sample_pid is not None:
        time.sleep(secs / 2)
        pss = pss_kib(sample_pid)
    text, _ = proc.communicate(timeout=secs + 30)
    cpu_ms = None
    requests = re.search(r"(\d+) requests in", text)
    if cpu_before is not None and requests and int(requests.group(1)):
        cpu_ms = (cpu_seconds(sample_pid) - cpu_before) * 1000 / int(requests.group(1))
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    if not rps:
        raise RuntimeError(f"no Requests/sec in wrk output: {text[-300:]}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s*(\d+)", text))
    sock = re.search(r"Socket errors:(.*)", text)
    if sock:
        errors += sum(int(n) for n in re.findall(r"(\d+)", sock.group(1)))
    error_lines = "; ".join(l.strip() for l in text.splitlines()
                            if "Non-2xx" in l or "Socket errors" in l)
    bad = re.search(r"BAD_BODIES (\d+)", text)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    mean = re.search(r"^\s*Latency\s+(\S+)", text, re.M)
    return {
        "rps": float(rps.group(1)),
        "errors": errors,
        "error_lines": error_lines,
        "bad": int(bad.group(1)) if bad else None,
        "p99": parse_ms(p99.group(1)) if p99 else float("nan"),
        # Little's law: requests in service on average = throughput × mean latency of the
        # answered requests. Below CONNECTIONS, some of wrk's connections sat in requests that
        # were never answered in the window, and p99 (of answered requests only) flatters.
        "in_service": float(rps.group(1)) * parse_ms(mean.group(1)) / 1000 if mean else float("nan"),
        "pss": pss,
        "cpu_ms": cpu_ms,
    }


def start_backends(work, keep, sessions, php_fpm, fastpm):
    """The selected backends for one keep_conn layout: (servers, sockets), in BACKENDS order.
    Each layout has its own: a backend whose workers sit on nginx's idle kept connections
    (php-fpm's children and exec's php-cgi serve one connection at a time) would starve the
    other layout. Socket names: SOCKET_NAMES."""
    servers, sockets = [], []
    for slug in SLUGS:
        name = f"{slug}-{keep}"
        sock = os.path.join(work, f"{name}.sock")
        if slug == "php-fpm":
            conf = os.path.join(work, f"{name}.conf")
            with open(conf, "w") as f:
                f.write(f"""[global]
pid = {work}/{name}.pid
error_log = {work}/{name}.log
daemonize = no

[dokuwiki]
user = www-data
group = www-data
listen = {sock}
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
listen.backlog = 511
pm = static
pm.max_children = {WORKERS}
pm.max_requests = 0
php_admin_value[session.save_path] = {sessions}
""")
            servers.append(Server(name, [php_fpm, "-F", "-y", conf], f"{work}/{name}.stderr"))
        else:
            conf = os.path.join(work, f"{name}.toml")
            with open(conf, "w") as f:
                f.write(fastpm_conf(slug, work, name, sock, sessions))
            servers.append(Server(name, [fastpm, "run", "-c", conf], f"{work}/{name}.log"))
        sockets.append(sock)
    return servers, sockets


def fastpm_conf(slug, work, name, sock, sessions):
    """The fastpm config of backend `slug`: 4 workers as www-data on unix socket `sock`."""
    php_app = (f'kind = "php"\ndocument_root = "{DOCROOT}"\n'
               f'ini = {{ "session.save_path" = "{sessions}" }}\n')
    max_children = WORKERS
    workers_line = ""
    if slug in ("thread", "process", "thread-shared", "process-shared", "process-embedded"):
        # php_ini is left out (""): php-cgi reads /etc/php/8.2/cgi, embedded PHP
        # /etc/php/8.2/embed, php-fpm /etc/php/8.2/fpm — Debian ships the same php.ini and conf.d
        # in the three.
        kind, _, layout = slug.partition("-")
        workers_line = f'workers = "{kind}"\n'
        app = php_app + f'php_children = "{layout or "per-worker"}"\n'
    elif slug == "exec":
        # php-cgi's own FastCGI loop on the pool socket; PHP_FCGI_MAX_REQUESTS=0 as php-fpm's
        # pm.max_requests = 0 and fastpm php's default (php-cgi alone would restart every 500).
        app = (f'kind = "exec"\ncommand = ["/usr/bin/php-cgi", "-d", "session.save_path={sessions}"]\n'
               'env = { PHP_FCGI_MAX_REQUESTS = "0" }\n')
    elif slug == "exec-children":
        # One php-cgi whose parent forks the 4 children after PHP (and opcache) is set up.
        max_children = 1
        app = (f'kind = "exec"\ncommand = ["/usr/bin/php-cgi", "-d", "session.save_path={sessions}"]\n'
               f'env = {{ PHP_FCGI_MAX_REQUESTS = "0", PHP_FCGI_CHILDREN = "{WORKERS}" }}\n')
    else:
        raise SystemExit(f"unknown backend {slug}")
    return f"""[global]
status_listen = ""
runtime_dir = "{work}/rt-{name}"

[pool.dokuwiki]
{workers_line}max_children = {max_children}
user = "www-data"
group = "www-data"

[pool.dokuwiki.listen]
address = "unix:{sock}"
backlog = 511
owner = "www-data"
group = "www-data"
mode = "0660"

[pool.dokuwiki.app]
{app}"""


def start_all(work, php_fpm, fastpm):
    sessions = os.path.join(work, "sessions")
    os.makedirs(sessions)
    shutil.chown(sessions, "www-data", "www-data")
    os.chmod(sessions, 0o700)
    backends, sockets = {}, {}
    for keep in KEEPS:
        servers, socks = start_backends(work, keep, sessions, php_fpm, fastpm)
        for i, (server, sock) in enumerate(zip(servers, socks)):
            backends[(i, keep)], sockets[(i, keep)] = server, sock

    # nginx the Debian way: snippets/fastcgi-php.conf (split_path_info, try_files, fastcgi.conf
    # with SCRIPT_FILENAME), workers as www-data. Per backend one server with a FastCGI connection
    # per request, one with kept connections (as many as workers, like the php_hello bench).
    ports = {}
    blocks = []
    for (i, keep), sock in sockets.items():
        port = free_port()
        ports[(i, keep)] = port
        keepalive = f"keepalive {WORKERS};" if keep == "on" else ""
        blocks.append(f"""upstream b{i}{keep} {{ server unix:{sock}; {keepalive} }}
server {{
    listen 127.0.0.1:{port};
    root {DOCROOT};
    index doku.php;
    location ~ \\.php$ {{
        include snippets/fastcgi-php.conf;
        fastcgi_keep_conn {keep};
        fastcgi_pass b{i}{keep};
    }}
}}
""")
    # Relative includes resolve against the config file's directory: link Debian's files there.
    for name in ("snippets", "fastcgi.conf", "fastcgi_params", "mime.types"):
        os.symlink(f"/etc/nginx/{name}", os.path.join(work, name))
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(f"""user www-data;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    include mime.types;
    client_body_temp_path {work}/nb; fastcgi_temp_path {work}/nf; proxy_temp_path {work}/np;
    uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
{''.join(blocks)}}}
""")
    nginx = Server("nginx", ["nginx", "-e", f"{work}/nginx-startup.log", "-c",
                             f"{work}/nginx.conf"], f"{work}/nginx.stderr")
    return backends, nginx, ports


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fmt_spread(values, digits=2):
    if not values:
        return "–", "–", "–"
    return (f"{statistics.median(values):.{digits}f}", f"{min(values):.{digits}f}–{max(values):.{digits}f}",
            " / ".join(f"{v:.{digits}f}" for v in values))


def main():
    for binary, package in (("wrk", "wrk"), ("nginx", "nginx"), ("php-cgi", "php8.2-cgi"),
                            ("/usr/sbin/php-fpm8.2", "php8.2-fpm"), ("curl", "curl")):
        need(binary, package)
    if "process-embedded" in SLUGS:
        need("/usr/lib/libphp8.2.so", "libphp8.2-embed")
    install_dokuwiki()
    fastpm = os.environ.get("FASTPM")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if fastpm:
        # Another binary: the checkout's commit says nothing about it.
        commit = f"of the binary {fastpm} (FASTPM; checkout at {commit})"
    else:
        subprocess.run(["cargo", "build", "--release", "--bin", "fastpm"], cwd=ROOT, check=True)
        fastpm = os.path.join(ROOT, "target", "release", "fastpm")
    work = tempfile.mkdtemp(prefix="fastpm-realapp.")
    os.chmod(work, 0o755)  # nginx's workers (www-data) reach the sockets through it
    started = time.time()
    load_start = loadavg()
    servers, nginx, ports = start_all(work, "/usr/sbin/php-fpm8.2", fastpm)
    try:
        return run(work, servers, ports, commit, load_start, started)
    finally:
        nginx.stop()
        for s in servers.values():
            s.stop()
        if not os.environ.get("KEEP_DIR"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


def run(work, servers, ports, commit, load_start, started):
    scenarios = [(b, keep) for keep in KEEPS for b in range(len(BACKENDS))]
    first = {}
    for key in scenarios:
        first[key] = wait_ready(ports[key], f"{BACKENDS[key[0]]} (keep_conn {key[1]})")
    reference = first[(0, KEEPS[0])]
    if isinstance(reference, Exception):
        raise SystemExit(f"php-fpm does not serve the page: {reference}")
    reference = normalise(reference)
    lua = os.path.join(work, "check.lua")
    with open(lua, "w") as f:
        f.write(lua_check(reference))

    # Page bytes compared: three curl samples per scenario, normalised, against php-fpm's.
    not_run, flags, samples = {}, {key: [] for key in scenarios}, {}
    for key in scenarios:
        if isinstance(first[key], Exception):
            not_run[key] = str(first[key]) + first_error(servers[key].logfile)
            continue
        digests = set()
        for _ in range(3):
            status, body = fetch(ports[key], PAGE)
            digests.add((status, hashlib.sha256(normalise(body)).hexdigest()[:12], len(body)))
        samples[key] = digests
        if digests != {(200, hashlib.sha256(reference).hexdigest()[:12], len(first[(0, KEEPS[0])]))}:
            flags[key].append(f"curl samples differ from php-fpm's: {sorted(digests)}")

    results = {key: [] for key in scenarios}
    round_loads = []
    pids = {key: server.proc.pid for key, server in servers.items()}
    for rnd in range(ROUNDS):
        before = loadavg()
        order = [scenarios[(rnd + i) % len(scenarios)] for i in range(len(scenarios))]
        if rnd % 2 == 1:
            order.reverse()
        for key in order:
            if key in not_run:
                continue
            name = f"{BACKENDS[key[0]]}, keep_conn {key[1]}"
            if WARMUP_SECS:
                wrk(ports[key], WARMUP_SECS, lua)
            try:
                r = wrk(ports[key], SECS, lua, sample_pid=pids[key])
            except Exception as e:  # a failed round is flagged, the others go on
                flags[key].append(f"round {rnd}: {e}")
                results[key].append(None)
                continue
            if r["errors"]:
                flags[key].append(f"round {rnd}: wrk: {r['error_lines']}")
            if r["bad"] is None or r["bad"]:
                flags[key].append(f"round {rnd}: {r['bad']} bodies differ from php-fpm's")
            cpu = f"{r['cpu_ms']:.2f}" if r["cpu_ms"] is not None else "?"
            log(f"round {rnd}: {name}: {r['rps']:.1f} req/s, p99 {r['p99']:.1f} ms, "
                f"in service {r['in_service']:.1f} of {CONNECTIONS}, "
                f"CPU {cpu} ms/request, "
                f"PSS {r['pss'][0] / 1024:.1f} MiB over {r['pss'][1]} processes, "
                f"errors {r['errors']}, bad bodies {r['bad']}")
            results[key].append(r)
        round_loads.append(f"{before} → {loadavg()}")

    # Where each tree's PSS is, by mapping, after the last round (servers idle, caches warm).
    by_mapping = {key[0]: pss_by_mapping(pid) for key, pid in pids.items()
                  if key[1] == KEEPS[0] and key not in not_run}

    ok = not not_run and not any(flags.values())
    out = []
    out.append(f"`{PAGE}` (DokuWiki {open(os.path.join(DOCROOT, 'VERSION')).read().strip()}, Debian package) "
               f"through nginx, {WORKERS} workers each, PHP as www-data with Debian's php.ini; "
               f"`wrk -t2 -c{CONNECTIONS} -d{SECS}s` after a {WARMUP_SECS} s warm-up, {ROUNDS} rounds "
               f"(order rotated, reversed every other round); fastpm commit {commit}; "
               f"run took {(time.time() - started) / 60:.1f} min\n")
    out.append(f"- load average (1, 5, 15 min): {load_start} at start, {loadavg()} at the end; "
               f"per round: {' / '.join(round_loads)}")
    out.append(f"- page: {len(first[(0, KEEPS[0])])} bytes from php-fpm; bodies compared after replacing "
               "the Unix time at the end of the task-runner URL (`taskrunner.php?…&amp;NNN`) with "
               "`T`: every response by wrk's Lua script, and 3 curl samples per scenario (sha256)\n")
    out.append("| keep_conn | backend | req/s median | req/s per round | ÷ php-fpm median | ÷ php-fpm min–max | "
               "÷ php-fpm per round | p99 ms per round | p99 ÷ php-fpm median (min–max) | "
               f"connections in service of {CONNECTIONS} per round | "
               "CPU ms/request per round | CPU ÷ php-fpm median (min–max) | "
               "PSS MiB per round (processes) | PSS ÷ php-fpm median (min–max) | body check |")
    out.append("|---|---|---:|---|---:|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(scenarios, key=lambda k: (k[1], k[0])):
        b, keep = key
        if key in not_run:
            why = not_run[key].replace("|", "\\|").replace("\n", " ")
            out.append(f"| {keep} | {BACKENDS[b]} | **NOT RUN** | {why} | | | | | | | | | | | |")
            continue
        rs = results[key]
        fpm = results[(0, keep)]
        rates = [r["rps"] for r in rs if r]
        ratios = [r["rps"] / f["rps"] for r, f in zip(rs, fpm) if r and f]
        pss_ratios = [r["pss"][0] / f["pss"][0] for r, f in zip(rs, fpm) if r and f]
        p99_ratios = [r["p99"] / f["p99"] for r, f in zip(rs, fpm) if r and f and f["p99"]]
        cpu_ratios = [r["cpu_ms"] / f["cpu_ms"] for r, f in zip(rs, fpm)
                      if r and f and r["cpu_ms"] and f["cpu_ms"]]
        cpu = " / ".join(f"{r['cpu_ms']:.2f}" if r and r["cpu_ms"] is not None else "–" for r in rs)
        per_round = " / ".join(f"{r['rps']:.0f}" if r else "failed" for r in rs)
        p99 = " / ".join(f"{r['p99']:.1f}" if r else "–" for r in rs)
        in_service = " / ".join(f"{r['in_service']:.1f}" if r else "–" for r in rs)
        pss = " / ".join(f"{r['pss'][0] / 1024:.1f} ({r['pss'][1]})" if r else "–" for r in rs)
        if b == 0:
            rmed = rspread = rrounds = pss_cell = p99_cell = cpu_cell = "–"
        else:
            rmed, rspread, rrounds = fmt_spread(ratios)
            rmed = f"**{rmed}×**"
            cells = []
            for values in (pss_ratios, p99_ratios, cpu_ratios):
                median, spread, _ = fmt_spread(values)
                cells.append(f"{median}× ({spread})")
            pss_cell, p99_cell, cpu_cell = cells
        check = "all bodies same, 0 errors" if not flags[key] else \
            "**FLAGGED**: " + "; ".join(flags[key]).replace("|", "\\|")
        out.append(f"| {keep} | {BACKENDS[b]} | {statistics.median(rates) if rates else float('nan'):.0f} | "
                   f"{per_round} | {rmed} | {rspread} | {rrounds} | {p99} | {p99_cell} | {in_service} | {cpu} | "
                   f"{cpu_cell} | {pss} | {pss_cell} | {check} |")
    out.append("\nPSS by mapping after the last round (whole tree, `/proc/PID/smaps`; the keep_conn off "
               "instances), MiB; the six largest of each backend:\n")
    out.append("| backend | total | largest mappings |")
    out.append("|---|---:|---|")
    for b, totals in by_mapping.items():
        top = sorted(totals.items(), key=lambda kv: -kv[1])[:6]
        cells = "; ".join(f"`{name}` {kib / 1024:.1f}" for name, kib in top)
        out.append(f"| {BACKENDS[b]} | {sum(totals.values()) / 1024:.1f} | {cells} |")
    # nginx's own complaints about each upstream (a request nginx retried on a fresh connection
    # does not reach wrk as an error, but it is logged here).
    complaints = {}
    socket_of = {os.path.join(work, f"{name}.sock"): key for key, name in SOCKET_NAMES.items()}
    try:
        with open(os.path.join(work, "nginx-error.log"), errors="replace") as f:
            for line in f:
                what = re.search(r"\] \d+#\d+: \*\d+ (.*?) while", line)
                where = re.search(r'upstream: "fastcgi://unix:([^"]*?):?"', line)
                if what and where:
                    key = (socket_of.get(where.group(1), where.group(1)), what.group(1))
                    complaints[key] = complaints.get(key, 0) + 1
    except OSError:
        pass
    out.append("\nnginx error log, per upstream: "
               + ("; ".join(f"{BACKENDS[k[0][0]]}, keep_conn {k[0][1]}: {n}× `{k[1]}`"
                            if isinstance(k[0], tuple) else f"{k[0]}: {n}× `{k[1]}`"
                            for k, n in sorted(complaints.items(), key=str))
                  or "nothing") + "\n")
    report = "\n".join(out) + "\n"
    print(report)
    if OUT:
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w") as f:
            f.write(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
