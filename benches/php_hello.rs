//! `cargo bench --bench php_hello`: `hello.php` through nginx, fastpm `kind = "php"` against
//! php-fpm 8.2, side by side in one run (DESIGN.md §6). Same worker count (4), same php-cgi
//! settings (no php.ini on either side: php-fpm runs with `-n`, fastpm's php-cgi through a
//! one-line wrapper that adds `-n`), one nginx with one server block per backend (one FastCGI
//! connection per request; `BENCH_KEEPALIVE=1` uses upstream keepalive with
//! `fastcgi_keep_conn on` instead), load from `wrk`. Rounds alternate the two backends; the
//! medians and their ratio are printed and written to `target/bench-php-hello.md`.
//!
//! Knobs: `BENCH_SECS` (measured seconds per round, default 8), `BENCH_ROUNDS` (default 3),
//! `BENCH_CONNECTIONS` (wrk connections, default 16), `BENCH_ACCEPT_LOCK` (fastpm, default
//! none, as fastpm's own default), `BENCH_PHP_FPM` (default /usr/sbin/php-fpm8.2), `BENCH_KEEPALIVE` (0),
//! `BENCH_SCRIPT` (the URL path, default /hello.php; e.g. `/sleep.php?ms=20`), `BENCH_WORKERS`
//! (fastpm php's `workers`: thread, the default, or process), `BENCH_SESSIONS`
//! (`own`, default: each server in a session of its own; `shared`: see `server_command`).
//! Three backends: php-fpm, fastpm `php`, fastpm `exec` running the same php-cgi.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const WORKERS: usize = 4;

/// A started server, its whole process group killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// How the servers are started. `own` (default): each in a session of its own (`setsid`), as a
/// service manager or a daemonising shell starts them. With the kernel's autogroup scheduling
/// (`kernel.sched_autogroup_enabled = 1` here) each session is one scheduling group, so nginx,
/// wrk and the backend share the CPUs group by group. `shared`: every server stays in the
/// bench's session, so all their threads and processes compete one by one; a backend made of
/// more tasks (fastpm's relay: 4 workers + 4 php-cgi) then takes CPU away from nginx and wrk.
fn server_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if std::env::var("BENCH_SESSIONS").as_deref() == Ok("shared") {
        let mut cmd = Command::new(program);
        cmd.process_group(0);
        cmd
    } else {
        // setsid(1) execs the program in place (the child is not a group leader, so it need not
        // fork): the pid stays the one `Group` kills, and it leads its own process group.
        let mut cmd = Command::new("setsid");
        cmd.arg(program);
        cmd
    }
}

fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Group, String> {
    let out = fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTENQ");
    cmd.spawn()
        .map(Group)
        .map_err(|e| format!("cannot start {name}: {e}"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fastpm_binary() -> PathBuf {
    std::env::var_os("BENCH_FASTPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fastpm")))
}

/// GET until the answer is 200 "Hello from PHP", or fail after 10 s.
fn wait_ready(port: u16, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{port}/hello.php"))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        if out.stdout == b"Hello from PHP\n" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} does not answer hello.php: {:?}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One wrk run: (requests/s, non-2xx + socket errors, p99 latency as wrk prints it).
fn wrk(port: u16, path: &str, secs: u64, connections: usize) -> Result<(f64, u64, String), String> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let mut errors = 0;
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = line.trim().strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    Ok((rps, errors, p99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("bench: {why}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let secs: u64 = env_or("BENCH_SECS", 8);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let connections: usize = env_or("BENCH_CONNECTIONS", 16);
    let accept_lock: String = env_or("BENCH_ACCEPT_LOCK", "none".to_string());
    let php_fpm: String = env_or("BENCH_PHP_FPM", "/usr/sbin/php-fpm8.2".to_string());
    let keepalive: u8 = env_or("BENCH_KEEPALIVE", 0);
    let script: String = env_or("BENCH_SCRIPT", "/hello.php".to_string());
    let worker_kind: String = env_or("BENCH_WORKERS", "thread".to_string());
    let sessions = if std::env::var("BENCH_SESSIONS").as_deref() == Ok("shared") {
        "one shared session"
    } else {
        "sessions of their own"
    };
    let load_at_start = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    // With keepalive, a worker holds its kept connection between requests (php-fpm's children
    // do the same), so nginx may keep at most as many idle connections as there are workers.
    let (keepalive_line, keep_conn) = if keepalive == 1 {
        (format!("keepalive {WORKERS};"), "on")
    } else {
        (String::new(), "off")
    };
    let tmp = tempfile::Builder::new()
        .prefix("fastpm-bench-php-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path();
    let d = dir.display();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("php-examples");
    let root = fs::canonicalize(&root).map_err(|e| format!("{}: {e}", root.display()))?;

    // php-fpm: no php.ini, 4 static children.
    let fpm_conf = dir.join("php-fpm.conf");
    let fpm_sock = dir.join("php-fpm.sock");
    fs::write(
        &fpm_conf,
        format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\n\
             [bench]\nlisten = {}\nlisten.backlog = 511\nlisten.mode = 0600\npm = static\n\
             pm.max_children = {WORKERS}\npm.max_requests = 0\n",
            fpm_sock.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = server_command(&php_fpm);
    cmd.args(["-n", "-F", "-R", "-y"]).arg(&fpm_conf);
    let _fpm = spawn("php-fpm", cmd, &dir.join("php-fpm.stderr"))?;

    // fastpm: php-cgi without php.ini too (the wrapper execs it, keeping fd 0 and the pid).
    let wrapper = dir.join("php-cgi-n");
    fs::write(&wrapper, "#!/bin/sh\nexec php-cgi -n \"$@\"\n").map_err(|e| e.to_string())?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let fastpm_sock = dir.join("fastpm.sock");
    let fastpm_conf = dir.join("fastpm.toml");
    fs::write(
        &fastpm_conf,
        format!(
            "[global]\nstatus_listen = \"\"\nruntime_dir = \"{d}/rt\"\n\n[pool.bench]\n\
             workers = \"{worker_kind}\"\naccept_lock = \"{accept_lock}\"\nmax_children = {WORKERS}\n\n\
             [pool.bench.listen]\naddress = \"unix:{}\"\nbacklog = 511\n\n[pool.bench.app]\n\
             kind = \"php\"\nphp_cgi = \"{}\"\ndocument_root = \"{}\"\nclear_env = false\n",
            fastpm_sock.display(),
            wrapper.display(),
            root.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = server_command(fastpm_binary());
    cmd.arg("run").arg("-c").arg(&fastpm_conf);
    let _fastpm = spawn("fastpm", cmd, &dir.join("fastpm.log"))?;

    // fastpm exec: the same php-cgi, but it accepts on the pool's socket itself (spawn-fcgi's
    // model); fastpm only supervises it. PHP_FCGI_MAX_REQUESTS=0 like php-fpm's
    // pm.max_requests = 0 here (php-cgi's own default restarts each child every 500 requests).
    let exec_sock = dir.join("fastpm-exec.sock");
    let exec_conf = dir.join("fastpm-exec.toml");
    fs::write(
        &exec_conf,
        format!(
            "[global]\nstatus_listen = \"\"\nruntime_dir = \"{d}/rt-exec\"\n\n[pool.exec]\n\
             max_children = {WORKERS}\n\n[pool.exec.listen]\naddress = \"unix:{}\"\nbacklog = 511\n\n\
             [pool.exec.app]\nkind = \"exec\"\ncommand = [\"{}\"]\nclear_env = false\n\
             env = {{ PHP_FCGI_MAX_REQUESTS = \"0\" }}\n",
            exec_sock.display(),
            wrapper.display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = server_command(fastpm_binary());
    cmd.arg("run").arg("-c").arg(&exec_conf);
    let _fastpm_exec = spawn("fastpm exec", cmd, &dir.join("fastpm-exec.log"))?;

    // nginx: one server block per backend, identical otherwise.
    let port_fpm = free_port();
    let port_fastpm = free_port();
    let port_exec = free_port();
    let server = |port: u16, upstream: &str| {
        format!(
            "server {{ listen 127.0.0.1:{port}; root {root};\n\
             location / {{ include /etc/nginx/fastcgi_params;\n\
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
             fastcgi_keep_conn {keep_conn}; fastcgi_pass {upstream}; }} }}\n",
            root = root.display()
        )
    };
    let nginx_conf = dir.join("nginx.conf");
    fs::write(
        &nginx_conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off;\nclient_body_temp_path {d}/b; fastcgi_temp_path {d}/f;\n\
             proxy_temp_path {d}/p; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
             upstream fpm {{ server unix:{}; {keepalive_line} }}\n\
             upstream fastpm {{ server unix:{}; {keepalive_line} }}\n\
             upstream exec {{ server unix:{}; {keepalive_line} }}\n{}{}{}}}\n",
            fpm_sock.display(),
            fastpm_sock.display(),
            exec_sock.display(),
            server(port_fpm, "fpm"),
            server(port_fastpm, "fastpm"),
            server(port_exec, "exec"),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = server_command("nginx");
    cmd.arg("-e")
        .arg(dir.join("nginx-startup.log"))
        .arg("-c")
        .arg(&nginx_conf);
    let _nginx = spawn("nginx", cmd, &dir.join("nginx.stderr"))?;

    wait_ready(port_fpm, "php-fpm")?;
    wait_ready(port_fastpm, "fastpm")?;
    wait_ready(port_exec, "fastpm exec")?;
    let backends = [
        ("php-fpm", port_fpm),
        ("fastpm php", port_fastpm),
        ("fastpm exec", port_exec),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    let mut lines = Vec::new();
    for round in 0..rounds {
        for step in 0..backends.len() {
            // Rotate which backend goes first, so none always runs on a warmer machine.
            let i = (round + step) % backends.len();
            let (name, port) = backends[i];
            wrk(port, &script, 2, connections)?; // warm-up
            let (rps, errors, p99) = wrk(port, &script, secs, connections)?;
            if errors > 0 {
                return Err(format!("{name}: {errors} errors in round {round}"));
            }
            eprintln!("round {round}: {name}: {rps:.0} req/s, p99 {p99}");
            lines.push(format!("| {round} | {name} | {rps:.0} | {p99} |"));
            results[i].push(rps);
        }
    }
    let fpm = median(results[0].clone());
    let mut summary = Vec::new();
    for (i, (name, _)) in backends.iter().enumerate().skip(1) {
        // Backends ran back to back in each round: their ratio per round cancels most of the
        // machine's drift between rounds.
        let per_round: Vec<f64> = results[i]
            .iter()
            .zip(&results[0])
            .map(|(f, p)| f / p)
            .collect();
        let per_round_text: Vec<String> = per_round.iter().map(|r| format!("{r:.2}×")).collect();
        summary.push(format!(
            "median {name}: {:.0} req/s; per round {}; **{name} / php-fpm = {:.2}× (median of the per-round ratios)**",
            median(results[i].clone()),
            per_round_text.join(" / "),
            median(per_round),
        ));
    }
    let report = format!(
        "{script} through nginx, {WORKERS} workers each, wrk -t2 -c{connections} -d{secs}s, \
         {rounds} rounds, fastpm {worker_kind} workers, accept_lock = {accept_lock}, fastcgi_keep_conn {keep_conn}, \
         servers in {sessions}, load average at start {load_at_start}\n\n\
         | round | backend | req/s | p99 |\n|---|---|---|---|\n{}\n\n\
         median php-fpm: {fpm:.0} req/s\n\n{}\n",
        lines.join("\n"),
        summary.join("\n\n"),
    );
    println!("{report}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-php-hello.md");
    let _ = fs::write(out, &report);
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
