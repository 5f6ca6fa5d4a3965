//! `cargo bench --bench php_hello`: `hello.php` through nginx, **every layout in every run**
//! (DESIGN.md §6). Per session layout seven backends: php-fpm 8.2; fastpm `kind = "php"` with
//! both php-cgi `php_children` layouts (`"shared"`, the default: one php-cgi parent per pool
//! forking `max_children` children; `"per-worker"`: each worker its own php-cgi) under both worker
//! kinds (`workers = "thread"` and `"process"`); fastpm `kind = "php"` with `php_children =
//! "embedded"` (PHP inside each worker process, no php-cgi; process workers only: `check`
//! refuses it with thread workers); and fastpm `kind = "exec"` (the same php-cgi accepting on the
//! pool's socket itself). Each of the seven runs once with every server in a session of its own
//! and once with all of them in the bench's session: fourteen scenarios, measured in rounds
//! (the order rotates each round); each fastpm scenario's ratio to php-fpm is taken per round
//! against the php-fpm of the same session layout, and printed with its median and its spread
//! (min–max and every round).
//!
//! Every response body is checked: wrk runs a Lua script that counts the bodies that differ from
//! the reference (php-fpm's answer, which for `/hello.php` must be exactly `Hello from PHP\n`),
//! and one body per scenario and round is fetched with curl and compared too. A scenario with a
//! wrong body, a non-2xx answer or a socket error is flagged in the table, and the bench exits 1.
//!
//! Same worker count (4), same PHP settings (no php.ini anywhere: php-fpm runs with `-n`,
//! fastpm's php-cgi through a one-line wrapper that adds `-n`, embedded PHP with `php_ini =
//! "none"`, its equivalent), one nginx per session layout with one server block per backend
//! (one FastCGI connection per request; `BENCH_KEEPALIVE=1` uses upstream keepalive with
//! `fastcgi_keep_conn on` instead).
//!
//! Knobs: `BENCH_SECS` (measured seconds per scenario and round, default 5), `BENCH_WARMUP_SECS`
//! (1), `BENCH_ROUNDS` (5), `BENCH_CONNECTIONS` (wrk connections, 16), `BENCH_ACCEPT_LOCK`
//! (fastpm, default none, as fastpm's own default), `BENCH_PHP_FPM` (/usr/sbin/php-fpm8.2),
//! `BENCH_KEEPALIVE` (0), `BENCH_SCRIPT` (the URL path, /hello.php; e.g. `/sleep.php?ms=20`),
//! `BENCH_FASTPM` (another fastpm binary), `BENCH_ONLY` (a quicker run: comma-separated
//! scenarios, default all; a term is a session layout — `own-sessions`, `shared-session` — a
//! backend — `php-fpm`, `thread-shared`, `process-shared`, `thread-per-worker`,
//! `process-per-worker`, `process-embedded`, `exec` — or both as `layout/backend`; the php-fpm
//! of every layout picked is always measured, as the ratios need it; only the servers picked are
//! started; e.g. `BENCH_ONLY=thread-shared,process-shared`). With the defaults a run takes
//! 14 × 6 s × 5 rounds ≈ 7.5 min. The report goes to stdout and `target/bench-php-hello.md`.

use std::fmt::Write as _;
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

/// How the servers of one layout are started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sessions {
    /// Each server in a session of its own (`setsid`), as a service manager or a daemonising
    /// shell starts them. With the kernel's autogroup scheduling (`kernel.sched_autogroup_enabled
    /// = 1` here) each session is one scheduling group, so nginx, wrk and the backend share the
    /// CPUs group by group.
    Own,
    /// Every server stays in the bench's session, so all their threads and processes compete one
    /// by one; a backend made of more tasks (fastpm's relay: 4 workers + 4 php-cgi) then takes
    /// CPU away from nginx and wrk.
    Shared,
}

impl Sessions {
    fn name(self) -> &'static str {
        match self {
            Sessions::Own => "own sessions",
            Sessions::Shared => "shared session",
        }
    }

    fn command(self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Sessions::Shared => {
                let mut cmd = Command::new(program);
                cmd.process_group(0);
                cmd
            }
            Sessions::Own => {
                // setsid(1) execs the program in place (the child is not a group leader, so it
                // need not fork): the pid stays the one `Group` kills, and it leads its own group.
                let mut cmd = Command::new("setsid");
                cmd.arg(program);
                cmd
            }
        }
    }

    /// Both layouts, in the order of the table.
    const ALL: [Sessions; 2] = [Sessions::Own, Sessions::Shared];

    /// The layout's name in `BENCH_ONLY`.
    fn id(self) -> &'static str {
        match self {
            Sessions::Own => "own-sessions",
            Sessions::Shared => "shared-session",
        }
    }

    /// The directory of its servers' files, short: fastpm's sockets live below it, and a unix
    /// socket path must fit in 108 bytes.
    fn dir(self) -> &'static str {
        match self {
            Sessions::Own => "own",
            Sessions::Shared => "shared",
        }
    }
}

/// What answers behind one of a layout's nginx server blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// php-fpm 8.2: the reference every ratio is taken against.
    PhpFpm,
    /// fastpm `kind = "php"`: every combination of the two settings that change how a request
    /// reaches php-cgi, so no run silently measures only the defaults.
    Php {
        /// `workers`: "thread" or "process".
        workers: &'static str,
        /// `php_children`: "shared" (one php-cgi parent per pool), "per-worker" (a php-cgi
        /// each) or "embedded" (PHP in the worker process; with "process" workers only).
        children: &'static str,
    },
    /// fastpm `kind = "exec"`: php-cgi accepts on the pool's socket itself.
    Exec,
}

/// The seven backends of one layout, in the order of the table; php-fpm first (index 0).
const BACKENDS: [Backend; 7] = [
    Backend::PhpFpm,
    Backend::Php {
        workers: "thread",
        children: "shared",
    },
    Backend::Php {
        workers: "process",
        children: "shared",
    },
    Backend::Php {
        workers: "thread",
        children: "per-worker",
    },
    Backend::Php {
        workers: "process",
        children: "per-worker",
    },
    Backend::Php {
        workers: "process",
        children: "embedded",
    },
    Backend::Exec,
];

impl Backend {
    /// The backend's name in `BENCH_ONLY` and in its files' names.
    fn id(self) -> String {
        match self {
            Backend::PhpFpm => "php-fpm".into(),
            Backend::Php { workers, children } => format!("{workers}-{children}"),
            Backend::Exec => "exec".into(),
        }
    }

    /// The backend's name in the table.
    fn name(self) -> String {
        match self {
            Backend::PhpFpm => "php-fpm".into(),
            Backend::Php { workers, children } => {
                let php = match children {
                    "shared" => "shared php-cgi",
                    "embedded" => "embedded PHP",
                    _ => "php-cgi per worker",
                };
                format!("fastpm php, {workers} workers, {php}")
            }
            Backend::Exec => "fastpm exec".into(),
        }
    }
}

/// The scenarios `BENCH_ONLY` picks, as (index in `Sessions::ALL`, index in `BACKENDS`) in the
/// table's order: all of them for an empty value. The php-fpm of every layout with a pick is
/// added (each ratio is taken against it); a term that names nothing is an error, so a typo
/// cannot shrink a run unnoticed.
fn select(only: &str) -> Result<Vec<(usize, usize)>, String> {
    let terms: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let picked = |l: usize, b: usize| {
        let (layout, backend) = (Sessions::ALL[l].id(), BACKENDS[b].id());
        terms.is_empty()
            || terms.iter().any(|t| match t.split_once('/') {
                Some((tl, tb)) => tl == layout && tb == backend,
                None => *t == layout || *t == backend,
            })
    };
    for t in &terms {
        let names_one = (0..Sessions::ALL.len()).any(|l| {
            (0..BACKENDS.len()).any(|b| {
                let (layout, backend) = (Sessions::ALL[l].id(), BACKENDS[b].id());
                *t == layout || *t == backend || *t == format!("{layout}/{backend}")
            })
        });
        if !names_one {
            return Err(format!(
                "BENCH_ONLY: {t:?} names no scenario (layouts: {}; backends: {})",
                Sessions::ALL.map(Sessions::id).join(", "),
                BACKENDS.map(Backend::id).join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for l in 0..Sessions::ALL.len() {
        let any = (0..BACKENDS.len()).any(|b| picked(l, b));
        for b in 0..BACKENDS.len() {
            if picked(l, b) || (any && b == 0) {
                out.push((l, b));
            }
        }
    }
    Ok(out)
}

fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Group, String> {
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

/// One GET with curl: (status, body).
fn fetch(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = out.stdout;
    let cut = text
        .iter()
        .rposition(|&b| b == b'\n')
        .ok_or("curl printed no status")?;
    let status = String::from_utf8_lossy(&text[cut + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((status, text[..cut].to_vec()))
}

/// GET until the answer is 200, or fail after 10 s.
fn wait_ready(port: u16, path: &str, name: &str) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = fetch(port, path)?;
        if status == 200 {
            return Ok(body);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} does not answer {path}: status {status}, {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Lua script wrk runs: counts the responses whose body differs from `expected` and prints
/// the sum over wrk's threads as `BAD_BODIES n` when done.
fn body_check_script(expected: &[u8]) -> String {
    // A decimal escape per byte: any body, newlines and quotes included, survives quoting.
    let literal: String = expected.iter().map(|b| format!("\\{b}")).collect();
    format!(
        "local threads = {{}}\n\
         function setup(thread) table.insert(threads, thread) end\n\
         function init(args) bad = 0 end\n\
         local expected = \"{literal}\"\n\
         function response(status, headers, body) if body ~= expected then bad = bad + 1 end end\n\
         function done(summary, latency, requests)\n\
           local total = 0\n\
           for _, t in ipairs(threads) do total = total + t:get(\"bad\") end\n\
           io.write(string.format(\"BAD_BODIES %d\\n\", total))\n\
         end\n"
    )
}

/// What one wrk run measured.
struct Run {
    rps: f64,
    /// Non-2xx/3xx answers and socket errors.
    errors: u64,
    /// wrk's own lines about them, for the report.
    error_lines: Vec<String>,
    /// Responses whose body differed from the reference.
    bad_bodies: u64,
    p99_ms: f64,
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)] {
        if let Some(number) = text.strip_suffix(unit) {
            return number.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

fn wrk(port: u16, path: &str, secs: u64, connections: usize, lua: &Path) -> Result<Run, String> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(lua)
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
    let mut error_lines = Vec::new();
    let mut bad_bodies = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
            error_lines.push(line.to_string());
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
            error_lines.push(line.to_string());
        }
        if let Some(v) = line.strip_prefix("BAD_BODIES") {
            bad_bodies = v.trim().parse().ok();
        }
    }
    let bad_bodies = bad_bodies.ok_or_else(|| format!("the body check did not report:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(parse_duration_ms)
        .unwrap_or(f64::NAN);
    Ok(Run {
        rps,
        errors,
        error_lines,
        bad_bodies,
        p99_ms,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(why) => {
            eprintln!("bench: {why}");
            ExitCode::from(1)
        }
    }
}

/// Everything one session layout runs: its servers (kept alive by the `Group`s) and the nginx
/// port of each backend, in `BACKENDS` order (`None` for one `BENCH_ONLY` left out).
struct Layout {
    sessions: Sessions,
    ports: Vec<Option<u16>>,
    _servers: Vec<Group>,
}

struct Knobs {
    accept_lock: String,
    php_fpm: String,
    keepalive: bool,
    script: String,
}

/// Starts the backends picked (indices in `BACKENDS`) and one nginx in front of them.
fn start_layout(
    sessions: Sessions,
    picked: &[usize],
    dir: &Path,
    root: &Path,
    k: &Knobs,
) -> Result<Layout, String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let d = dir.display();
    let mut servers = Vec::new();

    // fastpm's php-cgi without php.ini too (the wrapper execs it, keeping fd 0 and the pid).
    let wrapper = dir.join("php-cgi-n");
    fs::write(&wrapper, "#!/bin/sh\nexec php-cgi -n \"$@\"\n").map_err(|e| e.to_string())?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;

    // The upstream socket of each backend started, in `BACKENDS` order.
    let mut sockets = Vec::new();
    for &b in picked {
        let backend = BACKENDS[b];
        let id = backend.id();
        let sock = dir.join(format!("{id}.sock"));
        let (program, args, log, conf_text) = match backend {
            // php-fpm: no php.ini, 4 static children.
            Backend::PhpFpm => (
                PathBuf::from(&k.php_fpm),
                vec!["-n", "-F", "-R", "-y"],
                "php-fpm.stderr".to_string(),
                format!(
                    "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\n\
                     [bench]\nlisten = {}\nlisten.backlog = 511\nlisten.mode = 0600\npm = static\n\
                     pm.max_children = {WORKERS}\npm.max_requests = 0\n",
                    sock.display()
                ),
            ),
            Backend::Php { workers, children } => {
                // No php.ini: php-cgi through the `-n` wrapper, embedded PHP told so itself.
                let no_ini = if children == "embedded" {
                    "php_ini = \"none\"".to_string()
                } else {
                    format!("php_cgi = \"{}\"", wrapper.display())
                };
                (
                    fastpm_binary(),
                    vec!["run", "-c"],
                    format!("fastpm-{id}.log"),
                    format!(
                        "[global]\nstatus_listen = \"\"\nruntime_dir = \"{d}/rt-{id}\"\n\n[pool.bench]\n\
                         workers = \"{workers}\"\naccept_lock = \"{}\"\nmax_children = {WORKERS}\n\n\
                         [pool.bench.listen]\naddress = \"unix:{}\"\nbacklog = 511\n\n[pool.bench.app]\n\
                         kind = \"php\"\nphp_children = \"{children}\"\n{no_ini}\n\
                         document_root = \"{}\"\nclear_env = false\n",
                        k.accept_lock,
                        sock.display(),
                        root.display()
                    ),
                )
            }
            // fastpm exec: the same php-cgi, but it accepts on the pool's socket itself
            // (spawn-fcgi's model); fastpm only supervises it. PHP_FCGI_MAX_REQUESTS=0 like
            // php-fpm's pm.max_requests = 0 here (php-cgi's own default restarts each child
            // every 500 requests).
            Backend::Exec => (
                fastpm_binary(),
                vec!["run", "-c"],
                format!("fastpm-{id}.log"),
                format!(
                    "[global]\nstatus_listen = \"\"\nruntime_dir = \"{d}/rt-{id}\"\n\n[pool.exec]\n\
                     max_children = {WORKERS}\n\n[pool.exec.listen]\naddress = \"unix:{}\"\nbacklog = 511\n\n\
                     [pool.exec.app]\nkind = \"exec\"\ncommand = [\"{}\"]\nclear_env = false\n\
                     env = {{ PHP_FCGI_MAX_REQUESTS = \"0\" }}\n",
                    sock.display(),
                    wrapper.display(),
                ),
            ),
        };
        let conf = dir.join(match backend {
            Backend::PhpFpm => "php-fpm.conf".to_string(),
            _ => format!("fastpm-{id}.toml"),
        });
        fs::write(&conf, conf_text).map_err(|e| e.to_string())?;
        let mut cmd = sessions.command(program);
        cmd.args(args).arg(&conf);
        servers.push(spawn(&backend.name(), cmd, &dir.join(log))?);
        sockets.push((b, sock));
    }

    // nginx: one server block per backend, identical but for the upstream socket.
    let mut ports = vec![None; BACKENDS.len()];
    let (keepalive_line, keep_conn) = if k.keepalive {
        // A worker holds its kept connection between requests (php-fpm's children do the same),
        // so nginx may keep at most as many idle connections as there are workers.
        (format!("keepalive {WORKERS};"), "on")
    } else {
        (String::new(), "off")
    };
    let mut http = String::new();
    for (b, sock) in &sockets {
        let port = free_port();
        ports[*b] = Some(port);
        let _ = write!(
            http,
            "upstream b{b} {{ server unix:{}; {keepalive_line} }}\n\
             server {{ listen 127.0.0.1:{port}; root {root};\n\
             location / {{ include /etc/nginx/fastcgi_params;\n\
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
             fastcgi_keep_conn {keep_conn}; fastcgi_pass b{b}; }} }}\n",
            sock.display(),
            root = root.display()
        );
    }
    let nginx_conf = dir.join("nginx.conf");
    fs::write(
        &nginx_conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off;\nclient_body_temp_path {d}/b; fastcgi_temp_path {d}/f;\n\
             proxy_temp_path {d}/p; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n{http}}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = sessions.command("nginx");
    cmd.arg("-e")
        .arg(dir.join("nginx-startup.log"))
        .arg("-c")
        .arg(&nginx_conf);
    servers.push(spawn("nginx", cmd, &dir.join("nginx.stderr"))?);
    Ok(Layout {
        sessions,
        ports,
        _servers: servers,
    })
}

/// One scenario's rounds: per round the measurement, or why it failed.
struct Scenario {
    /// Index in the layouts started.
    layout: usize,
    /// Index in `BACKENDS`.
    backend: usize,
    /// Its server block in the layout's nginx.
    port: u16,
    /// Why the scenario cannot run at all (its server did not answer).
    not_run: Option<String>,
    rounds: Vec<Result<Run, String>>,
    /// Problems found by the body checks and wrk's error counts; any makes the run fail.
    flags: Vec<String>,
}

fn run() -> Result<bool, String> {
    let secs: u64 = env_or("BENCH_SECS", 5);
    let warmup: u64 = env_or("BENCH_WARMUP_SECS", 1);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let connections: usize = env_or("BENCH_CONNECTIONS", 16);
    let knobs = Knobs {
        accept_lock: env_or("BENCH_ACCEPT_LOCK", "none".to_string()),
        php_fpm: env_or("BENCH_PHP_FPM", "/usr/sbin/php-fpm8.2".to_string()),
        keepalive: env_or("BENCH_KEEPALIVE", 0u8) == 1,
        script: env_or("BENCH_SCRIPT", "/hello.php".to_string()),
    };
    let script = knobs.script.clone();
    let load_at_start = load_average();
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("fastpm-bench-php-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("php-examples");
    let root = fs::canonicalize(&root).map_err(|e| format!("{}: {e}", root.display()))?;

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let picks = select(&only)?;
    // Only the layouts with a pick are started, each with only its picked backends.
    let mut layouts = Vec::new();
    for (l, &sessions) in Sessions::ALL.iter().enumerate() {
        let picked: Vec<usize> = picks.iter().filter(|p| p.0 == l).map(|p| p.1).collect();
        if !picked.is_empty() {
            let dir = tmp.path().join(sessions.dir());
            layouts.push(start_layout(sessions, &picked, &dir, &root, &knobs)?);
        }
    }
    let first_fpm = layouts
        .first()
        .and_then(|l| l.ports[0])
        .ok_or("BENCH_ONLY picked no scenario")?;

    // The reference body: php-fpm's answer in the first layout. For hello.php it must be the
    // script's exact output, so php-fpm is checked too.
    let reference = wait_ready(first_fpm, &script, "php-fpm")?;
    if script == "/hello.php" && reference != b"Hello from PHP\n" {
        return Err(format!(
            "php-fpm's hello.php body is {:?}, not \"Hello from PHP\\n\"",
            String::from_utf8_lossy(&reference)
        ));
    }
    let lua = tmp.path().join("body-check.lua");
    fs::write(&lua, body_check_script(&reference)).map_err(|e| e.to_string())?;

    let mut scenarios = Vec::new();
    for (l, layout) in layouts.iter().enumerate() {
        for (b, port) in layout.ports.iter().enumerate() {
            let Some(port) = *port else { continue };
            let not_run = match wait_ready(port, &script, &BACKENDS[b].name()) {
                Ok(body) if body == reference => None,
                Ok(body) => Some(format!(
                    "its first body differs from php-fpm's: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )),
                Err(why) => Some(why),
            };
            scenarios.push(Scenario {
                layout: l,
                backend: b,
                port,
                not_run,
                rounds: Vec::new(),
                flags: Vec::new(),
            });
        }
    }

    let mut round_loads = Vec::new();
    for round in 0..rounds {
        let before = load_average();
        for step in 0..scenarios.len() {
            // Rotate which scenario goes first, and reverse every other round, so none always
            // runs first, last, or after the same neighbour.
            let mut i = (round + step) % scenarios.len();
            if round % 2 == 1 {
                i = scenarios.len() - 1 - i;
            }
            let s = &mut scenarios[i];
            if s.not_run.is_some() {
                continue;
            }
            let port = s.port;
            let name = format!(
                "{} ({})",
                BACKENDS[s.backend].name(),
                layouts[s.layout].sessions.name()
            );
            if warmup > 0 {
                let _ = wrk(port, &script, warmup, connections, &lua);
            }
            let result = wrk(port, &script, secs, connections, &lua);
            match &result {
                Ok(run) => {
                    eprintln!(
                        "round {round}: {name}: {:.0} req/s, p99 {:.2} ms, errors {}, bad bodies {}",
                        run.rps, run.p99_ms, run.errors, run.bad_bodies
                    );
                    if run.errors > 0 {
                        s.flags.push(format!(
                            "round {round}: wrk: {}",
                            run.error_lines.join(", ")
                        ));
                    }
                    if run.bad_bodies > 0 {
                        s.flags.push(format!(
                            "round {round}: {} bodies differ from php-fpm's",
                            run.bad_bodies
                        ));
                    }
                }
                Err(why) => eprintln!("round {round}: {name}: {why}"),
            }
            // A body sampled outside wrk, with curl, between measurements.
            match fetch(port, &script) {
                Ok((200, body)) if body == reference => {}
                Ok((status, body)) => s.flags.push(format!(
                    "round {round}: curl got status {status}, body {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(100)])
                )),
                Err(why) => s.flags.push(format!("round {round}: curl: {why}")),
            }
            s.rounds.push(result);
        }
        round_loads.push(format!("{before} → {}", load_average()));
    }

    let (report, ok) = render(
        &scenarios,
        &layouts,
        &RunInfo {
            script,
            secs,
            warmup,
            rounds,
            connections,
            accept_lock: knobs.accept_lock.clone(),
            keep_conn: if knobs.keepalive { "on" } else { "off" },
            load_at_start,
            load_at_end: load_average(),
            round_loads,
            reference,
            reference_from: layouts[0].sessions.name(),
            only,
            picked: scenarios.len(),
            minutes: started.elapsed().as_secs_f64() / 60.0,
        },
    );
    println!("{report}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-php-hello.md");
    let _ = fs::write(out, &report);
    Ok(ok)
}

struct RunInfo {
    script: String,
    secs: u64,
    warmup: u64,
    rounds: usize,
    connections: usize,
    accept_lock: String,
    keep_conn: &'static str,
    load_at_start: String,
    load_at_end: String,
    round_loads: Vec<String>,
    reference: Vec<u8>,
    /// The layout whose php-fpm gave the reference body.
    reference_from: &'static str,
    /// `BENCH_ONLY` as given, and how many scenarios it left.
    only: String,
    picked: usize,
    minutes: f64,
}

fn successful(s: &Scenario) -> Vec<Option<&Run>> {
    s.rounds.iter().map(|r| r.as_ref().ok()).collect()
}

/// The markdown report, and whether every scenario ran clean.
fn render(scenarios: &[Scenario], layouts: &[Layout], info: &RunInfo) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let _ = writeln!(
        out,
        "{} through nginx, {WORKERS} workers each, wrk -t2 -c{} -d{}s after a {} s warm-up, {} rounds \
         (order rotated, reversed every other round), fastpm accept_lock = {}, fastcgi_keep_conn {}; \
         run took {:.1} min\n",
        info.script, info.connections, info.secs, info.warmup, info.rounds, info.accept_lock,
        info.keep_conn, info.minutes
    );
    let _ = writeln!(
        out,
        "- load average (1, 5, 15 min): {} at start, {} at the end; per round (1-min before → after): {}",
        info.load_at_start,
        info.load_at_end,
        info.round_loads.join(" / ")
    );
    let all = Sessions::ALL.len() * BACKENDS.len();
    if info.picked == all {
        let _ = writeln!(out, "- scenarios: all {all}");
    } else {
        let _ = writeln!(
            out,
            "- scenarios: {} of {all} (BENCH_ONLY={:?}; php-fpm of each layout always measured)",
            info.picked, info.only
        );
    }
    let _ = writeln!(
        out,
        "- reference body (php-fpm, {}): {:?}; every response checked against it by wrk's Lua script, plus one curl sample per scenario and round\n",
        info.reference_from,
        String::from_utf8_lossy(&info.reference[..info.reference.len().min(80)])
    );
    let _ = writeln!(
        out,
        "| sessions | backend | median req/s | req/s per round | p99 ms per round | ÷ php-fpm, median | ÷ php-fpm min–max | ÷ php-fpm per round | body check |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---|---:|---|---|---|");
    for s in scenarios {
        let sessions = layouts[s.layout].sessions.name();
        let backend = BACKENDS[s.backend].name();
        if let Some(why) = &s.not_run {
            ok = false;
            let _ = writeln!(
                out,
                "| {sessions} | {backend} | **NOT RUN** | {} | | | | | |",
                why.lines().next().unwrap_or("").replace('|', "\\|")
            );
            continue;
        }
        let runs = successful(s);
        let rates: Vec<f64> = runs.iter().flatten().map(|r| r.rps).collect();
        let rate_text: Vec<String> = runs
            .iter()
            .map(|r| r.map_or("failed".into(), |r| format!("{:.0}", r.rps)))
            .collect();
        let p99_text: Vec<String> = runs
            .iter()
            .map(|r| r.map_or("–".into(), |r| format!("{:.2}", r.p99_ms)))
            .collect();
        // Paired with php-fpm of the same layout in the same round.
        let fpm = scenarios
            .iter()
            .find(|o| o.layout == s.layout && o.backend == 0)
            .map(successful)
            .unwrap_or_default();
        let ratios: Vec<Option<f64>> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let f = fpm.get(i).copied().flatten()?;
                Some((*r)?.rps / f.rps)
            })
            .collect();
        let present: Vec<f64> = ratios.iter().flatten().copied().collect();
        let (ratio_median, ratio_spread, ratio_rounds) = if s.backend == 0 || present.is_empty() {
            ("–".to_string(), "–".to_string(), "–".to_string())
        } else {
            let (lo, hi) = min_max(&present);
            let per: Vec<String> = ratios
                .iter()
                .map(|r| r.map_or("–".into(), |r| format!("{r:.2}")))
                .collect();
            (
                format!("**{:.2}×**", median(&present)),
                format!("{lo:.2}–{hi:.2}"),
                per.join(" / "),
            )
        };
        let failed_rounds = s.rounds.iter().filter(|r| r.is_err()).count();
        let check = if s.flags.is_empty() && failed_rounds == 0 {
            "all bodies right, 0 errors".to_string()
        } else {
            ok = false;
            let mut all = s.flags.clone();
            if failed_rounds > 0 {
                all.push(format!("{failed_rounds} rounds failed"));
            }
            format!("**FLAGGED**: {}", all.join("; ").replace('|', "\\|"))
        };
        let _ = writeln!(
            out,
            "| {sessions} | {backend} | {:.0} | {} | {} | {ratio_median} | {ratio_spread} | {ratio_rounds} | {check} |",
            median(&rates),
            rate_text.join(" / "),
            p99_text.join(" / "),
        );
    }
    (out, ok)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
