//! The somaxconn clamp, for real: in a private network namespace (`unshare -n`, root) whose
//! `net.core.somaxconn` is lowered to 128, a listener asking for 511 gets 128 from the kernel,
//! the probe reports 128, and fastpm's warning names both numbers and the fix.
//!
//! Runs `examples/probe_backlog.rs` inside the namespace. If `unshare` is not permitted the
//! test fails with the reason; it never skips.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The example binary, built on demand (once per test process) when the test was run without
/// the examples.
fn probe_backlog_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_build).clone()
}

fn find_or_build() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/probe_somaxconn_netns-HASH → target/debug/examples/probe_backlog
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("examples").join("probe_backlog");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "probe_backlog"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example probe_backlog");
        assert!(
            status.success(),
            "cargo build --example probe_backlog failed"
        );
    }
    assert!(binary.exists(), "{} missing after build", binary.display());
    binary
}

/// Run the example with `args` in a fresh network namespace with somaxconn 128 and loopback up.
fn run_in_netns(args: &[&str]) -> String {
    let script =
        "sysctl -w net.core.somaxconn=128 >/dev/null && ip link set lo up && exec \"$0\" \"$@\"";
    let out = Command::new("unshare")
        .arg("-n")
        .args(["sh", "-c", script])
        .arg(probe_backlog_binary())
        .args(args)
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "unshare -n … probe_backlog {args:?} failed ({}); this test needs root and permission to \
         create a network namespace.\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn unix_backlog_511_is_clamped_to_namespace_somaxconn_128() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("clamped.sock").display());
    let out = run_in_netns(&[&address, "511"]);
    let expected_warning = format!(
        "warning: listen backlog 511 for {address} is clamped by the kernel to net.core.somaxconn = 128; \
         effective backlog 128; raise it with: sysctl -w net.core.somaxconn=511\n"
    );
    assert!(out.starts_with(&expected_warning), "got:\n{out}");
    assert!(
        out.contains("somaxconn=128 requested=511 queued=0 backlog=128 method=unix_diag"),
        "got:\n{out}"
    );
}

#[test]
fn tcp_backlog_511_is_clamped_to_namespace_somaxconn_128() {
    let out = run_in_netns(&["127.0.0.1:0", "511"]);
    assert!(
        out.contains("clamped by the kernel to net.core.somaxconn = 128"),
        "got:\n{out}"
    );
    assert!(
        out.contains("somaxconn=128 requested=511 queued=0 backlog=128 method=inet_diag"),
        "got:\n{out}"
    );
}

#[test]
fn backlog_within_namespace_somaxconn_is_not_clamped() {
    let out = run_in_netns(&["[::1]:0", "100"]);
    assert!(!out.contains("warning"), "got:\n{out}");
    assert!(
        out.contains("somaxconn=128 requested=100 queued=0 backlog=100 method=inet_diag"),
        "got:\n{out}"
    );
}
