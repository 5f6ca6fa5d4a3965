//! `/metrics` as a Prometheus server reads it: the master's OpenMetrics text, from a running
//! fastpm with traffic behind it, parsed by the Prometheus project's own OpenMetrics parser
//! (python3-prometheus-client, Debian's package; installed by scripts/deps.sh test). A parse
//! error, a missing `# EOF`, a bad histogram or a renamed family fails the test.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{http_get, raw, require, Server};

/// Parse `text` with prometheus_client's OpenMetrics parser; the family names it found.
fn parse_openmetrics(text: &str) -> Vec<String> {
    let python = require("python3");
    // Debian's interpreter: the package installs for it, not for another python3 on PATH.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        std::path::PathBuf::from("/usr/bin/python3")
    } else {
        python
    };
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
             for family in parse(sys.stdin.read()):\n\
             \x20   print(family.name, family.type, len(family.samples))\n",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {stderr}\n(install python3-prometheus-client: scripts/deps.sh test)\n---\n{text}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn metrics_parse_with_the_prometheus_openmetrics_parser() {
    let server = Server::start(
        r#"
[global]
status_listen = "127.0.0.1:0"
runtime_dir = "{dir}/rt"

[pool.m]
workers = "process"
max_children = 2

[pool.m.listen]
address = "unix:{dir}/m.sock"

[pool.m.app]
kind = "sleep"

[pool.t]
workers = "thread"
max_children = 1

[pool.t.listen]
address = "127.0.0.1:0"

[pool.t.app]
kind = "hello"
"#,
    );
    let addr = format!("unix:{}", server.path("m.sock").display());
    for _ in 0..5 {
        assert!(raw::get(&addr, "/s", "ms=1").body().contains("slept"));
    }
    // The backlog advice comes from the master's one-second history: once the second of these
    // requests has closed, /metrics has it too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (code, text) = loop {
        let (code, text) = http_get(server.status_port(), "/metrics");
        if text.contains("fastpm_advised_backlog{") || std::time::Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, 200, "{text}");
    let families = parse_openmetrics(&text);
    // Today's names (DESIGN §5) and php-fpm's, as exporters and dashboards know them.
    for name in [
        "phpfpm_accepted_connections",
        "phpfpm_listen_queue",
        "phpfpm_listen_queue_length",
        "phpfpm_active_processes",
        "fastpm_listen_backlog",
        "fastpm_held_requests",
        "fastpm_messages_delivered",
        // Counted through the metrics facade's histogram; the master's backlog advice.
        "fastpm_request_duration_seconds",
        "fastpm_advised_backlog",
    ] {
        assert!(
            families.iter().any(|f| f == name),
            "no family {name} among {families:?}"
        );
    }
    assert!(
        families.iter().any(|f| f.starts_with("fastpm_queue_wait")),
        "no queue-wait histogram among {families:?}"
    );
}
