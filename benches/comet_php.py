#!/usr/bin/env python3
"""benches/comet_php.py — issue 10's experiment (d): a long-polling chat on php-fpm, written the
way PHP apps do it today (benches/comet_php.php: the request stays in PHP, which looks for a
new message every 100 ms for up to 30 s), against the same chat on fastpm GRIP
(php-examples/chat.php: the script answers with Grip-* headers and fastpm holds the request
without PHP). Both behind the same nginx, 4 PHP workers each (php-fpm 8.2 `pm = static`,
fastpm `php` pool of 4 worker processes), 30 s holds, the same clients.

One scenario = a fresh backend and nginx, then:
  1. N clients start chat.html's loop at once: GET ?last_id=0; on 204 ask again at once, on
     another answer after 2 s; done when a 200 with a message arrives (or DEADLINE passes).
  2. After SETTLE seconds (fastpm: and once all N are held, at most 25 s after the start):
     where the N polls are — in PHP (php-fpm: busy workers), held by fastpm (its status),
     waiting in the kernel's accept queue (`ss -lx` Recv-Q).
  3. Then one normal page (hello.php), and PUBLISH_AFTER seconds later, at t0, one publish: a
     POST of the form through nginx, as chat.html sends it (for php-fpm also, in a scenario of
     its own, the best case: the message written straight into its file, no request needed).
  4. Reported: the page's latency (from its own start: a page still waiting at t0 is answered
     only once the publish frees a worker), the publish's latency and status, how many
     clients got the message and the latency from t0 to each (p50, p99, max), and the other
     answers they saw on the way.

Loopback only. Knobs (environment): FPM_CLIENTS ("4 5 20"), FASTPM_CLIENTS ("4 100 1000"),
SETTLE (3), PUBLISH_AFTER (5), DEADLINE (100), BACKLOG (4096, both servers' listen backlog),
FASTPM (a fastpm binary; default: cargo build --release).
"""
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHP_FPM = "/usr/sbin/php-fpm8.2"
FPM_CLIENTS = [int(n) for n in os.environ.get("FPM_CLIENTS", "4 5 20").split()]
FASTPM_CLIENTS = [int(n) for n in os.environ.get("FASTPM_CLIENTS", "4 100 1000").split()]
SETTLE = float(os.environ.get("SETTLE", 3))
# Every new poll runs the script once before it is held, so a burst of N polls waits in the
# accept queue for the 4 workers: with 511 (the default), 1000 polls sent at once through
# nginx got 119 × 502 (a full unix-socket queue). Both servers get the same.
BACKLOG = int(os.environ.get("BACKLOG", 4096))
PUBLISH_AFTER = float(os.environ.get("PUBLISH_AFTER", 5))
DEADLINE = float(os.environ.get("DEADLINE", 100))
WORKERS = 4
HOLD_S = 30
FORM = b"user=bench&text=hello"


def fastpm_binary():
    if os.environ.get("FASTPM"):
        return os.environ["FASTPM"]
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "fastpm")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, ready, proc, log, within=15):
    deadline = time.time() + within
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"{what} did not start; see {log}")
        time.sleep(0.05)


def port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def site(work):
    root = os.path.join(work, "www")
    os.makedirs(root)
    for name in ("chat.php", "hello.php"):
        shutil.copy(os.path.join(ROOT, "php-examples", name), root)
    shutil.copy(os.path.join(ROOT, "benches", "comet_php.php"),
                os.path.join(root, "chat_poll_loop.php"))
    return root


def start_fpm(work, root):
    sock = os.path.join(work, "fpm.sock")
    conf = os.path.join(work, "php-fpm.conf")
    with open(conf, "w") as f:
        f.write(f"[global]\npid = {work}/php-fpm.pid\nerror_log = {work}/php-fpm.log\n"
                f"daemonize = no\n[www]\nlisten = {sock}\nlisten.backlog = {BACKLOG}\npm = static\n"
                f"pm.max_children = {WORKERS}\n")
    log = os.path.join(work, "php-fpm.log")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    proc = subprocess.Popen([PHP_FPM, "-F", "-R", "-y", conf], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("php-fpm", lambda: os.path.exists(sock), proc, log)
    return proc, sock


def start_fastpm(fastpm, work, root):
    sock = os.path.join(work, "fastpm.sock")
    status = free_port()
    conf = os.path.join(work, "fastpm.toml")
    with open(conf, "w") as f:
        f.write(f"""
[global]
status_listen = "127.0.0.1:{status}"
runtime_dir = "{work}/rt"

[pool.www]
workers = "process"
max_children = {WORKERS}

[pool.www.listen]
address = "unix:{sock}"
backlog = {BACKLOG}

[pool.www.app]
kind = "php"
php_cgi = "{shutil.which('php-cgi')}"
document_root = "{root}"
env = {{ FASTPM_PUBLISH_URL = "http://127.0.0.1:{status}/publish/", CHAT_HOLD_SECONDS = "{HOLD_S}" }}
""")
    log = os.path.join(work, "fastpm.log")
    proc = subprocess.Popen([fastpm, "run", "-c", conf], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    wait_for("fastpm", lambda: "ready:" in open(log).read(), proc, log)
    return proc, sock, status


def start_nginx(work, root, sock):
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nb; fastcgi_temp_path {work}/nf; proxy_temp_path {work}/np;
    uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
    # No fastcgi_keep_conn: a php-fpm worker serves a kept connection until nginx closes it,
    # so with 4 workers an idle kept connection would starve the accept queue (measured: the
    # 5th client never answered). fastpm parks idle kept connections and would not care.
    upstream backend {{ server unix:{sock}; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_read_timeout 60s;
            fastcgi_pass backend;
        }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-e", f"{work}/nginx-start.log", "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("nginx", lambda: port_open(port), proc, f"{work}/nginx-error.log")
    return proc, port


def stop(proc, sig=15):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def http(port, method, target, body=b""):
    """One request on its own connection: (status, headers, body, time answered)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if method == "POST":
            head += ("Content-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: {len(body)}\r\n")
        writer.write(head.encode() + b"\r\n" + body)
        raw = await reader.read()
        writer.close()
    except OSError:
        return 0, {}, b"", time.monotonic()
    done = time.monotonic()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, b"", done
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest, done


async def client(port, path, deadline):
    """chat.html's loop until the first message: (time it arrived or None, other answers)."""
    seen = collections.Counter()
    while time.monotonic() < deadline:
        left = deadline - time.monotonic()
        try:
            status, headers, _, done = await asyncio.wait_for(
                http(port, "GET", f"{path}?last_id=0"), left)
        except asyncio.TimeoutError:
            break
        if status == 200 and headers.get("message-id"):
            return done, seen
        seen[status] += 1
        if status != 204:
            await asyncio.sleep(2)
    seen["no answer by the deadline"] += 1
    return None, seen


def queue_depth(sock):
    """The listening unix socket's accept queue (ss Recv-Q)."""
    out = subprocess.run(["ss", "-Hlx"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if sock in fields:
            return int(fields[2])
    return -1


def busy_fpm_workers(fpm_pid):
    """php-fpm children serving a request: every child holds the listening socket; one that
    also holds a connection is serving (a worker sleeping in the poll loop looks idle to ps)."""
    count = 0
    for child in children(fpm_pid):
        fds = os.listdir(f"/proc/{child}/fd")
        sockets = sum(1 for fd in fds
                      if os.readlink(f"/proc/{child}/fd/{fd}").startswith("socket:"))
        count += sockets > 1
    return count


def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def held_by_fastpm(status_port):
    import urllib.request
    doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status?json"))
    return doc["pools"][0]["held requests"]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def scenario(port, path, n, probe, publish, all_held=lambda: True):
    start = time.monotonic()
    deadline = start + DEADLINE
    clients = [asyncio.create_task(client(port, path, deadline)) for _ in range(n)]
    await asyncio.sleep(SETTLE)
    # fastpm: until every poll has passed its php-cgi and is held (on a busy machine a burst
    # of 1000 takes longer than SETTLE); then the page below does not queue behind the burst.
    while not all_held() and time.monotonic() < start + HOLD_S - 5:
        await asyncio.sleep(0.1)
    where = probe()
    where["settled_s"] = round(time.monotonic() - start, 1)
    page_sent = time.monotonic()
    page = asyncio.create_task(http(port, "GET", "/hello.php"))
    await asyncio.sleep(PUBLISH_AFTER)
    t0 = time.monotonic()
    pub = asyncio.create_task(publish(port))
    results = await asyncio.gather(*clients)
    page_status, _, _, page_done = await page
    pub_status, pub_done = await pub
    got = [done - t0 for done, _ in results if done is not None]
    others = collections.Counter()
    for _, seen in results:
        others.update(seen)
    return {
        "clients": n,
        **where,
        "page_ms": round((page_done - page_sent) * 1000, 1), "page_status": page_status,
        "publish_ms": round((pub_done - t0) * 1000, 1), "publish_status": pub_status,
        "delivered": len(got),
        "p50_ms": round(percentile(got, 50) * 1000, 1) if got else None,
        "p99_ms": round(percentile(got, 99) * 1000, 1) if got else None,
        "max_ms": round(max(got) * 1000, 1) if got else None,
        "other_answers": dict(others),
    }


async def post_form(port, path):
    status, _, _, done = await http(port, "POST", path, FORM)
    return status, done


def write_message(root):
    """The best case for php-fpm: the message lands in the file with no request."""
    async def publish(_port):
        state = os.path.join(root, "chat-state.json")
        with open(state + ".tmp", "w") as f:
            json.dump({"id": 1, "message": {"user": "bench", "text": "hello"}}, f)
        os.rename(state + ".tmp", state)
        return 204, time.monotonic()
    return publish


def run_fpm(n, direct):
    with tempfile.TemporaryDirectory() as work:
        root = site(work)
        fpm, sock = start_fpm(work, root)
        nginx, port = start_nginx(work, root, sock)
        try:
            def probe():
                return {"in_php": busy_fpm_workers(fpm.pid), "held_by_server": 0,
                        "accept_queue": queue_depth(sock)}
            publish = write_message(root) if direct else (
                lambda p: post_form(p, "/chat_poll_loop.php"))
            return asyncio.run(scenario(port, "/chat_poll_loop.php", n, probe, publish))
        finally:
            stop(nginx)
            stop(fpm, 3)


def run_fastpm(fastpm, n):
    with tempfile.TemporaryDirectory() as work:
        root = site(work)
        server, sock, status = start_fastpm(fastpm, work, root)
        nginx, port = start_nginx(work, root, sock)
        try:
            def probe():
                return {"in_php": 0, "held_by_server": held_by_fastpm(status),
                        "accept_queue": queue_depth(sock)}
            return asyncio.run(scenario(port, "/chat.php", n, probe,
                                        lambda p: post_form(p, "/chat.php"),
                                        lambda: held_by_fastpm(status) >= n))
        finally:
            stop(nginx)
            stop(server)


def main():
    fastpm = fastpm_binary()
    rows = []
    for n in FASTPM_CLIENTS:
        rows.append(("fastpm GRIP, publish = POST chat.php", run_fastpm(fastpm, n)))
        print(json.dumps(rows[-1]), flush=True)
    for n in FPM_CLIENTS:
        rows.append(("php-fpm poll loop, publish = written to the file", run_fpm(n, True)))
        print(json.dumps(rows[-1]), flush=True)
    for n in FPM_CLIENTS:
        rows.append(("php-fpm poll loop, publish = POST through the pool", run_fpm(n, False)))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print("| backend | clients | probed at | in PHP | held by fastpm | accept queue | hello.php | "
          "publish (status) | got the message | publish → delivery p50 / p99 / max | "
          "other answers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        lat = (f"{r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} ms"
               if r["delivered"] else "—")
        others = ", ".join(f"{k}: {v}" for k, v in sorted(r["other_answers"].items(),
                                                            key=str)) or "—"
        print(f"| {name} | {r['clients']} | {r['settled_s']} s | {r['in_php']} | "
              f"{r['held_by_server']} | "
              f"{r['accept_queue']} | {r['page_ms']} ms ({r['page_status']}) | "
              f"{r['publish_ms']} ms ({r['publish_status']}) | {r['delivered']}/{r['clients']} | "
              f"{lat} | {others} |")


if __name__ == "__main__":
    main()
