//! `fastpm status --watch` on a real terminal: tmux (a private server on its own socket) runs
//! it in a 120×30 pane against a real master whose 2 `sleep` workers take a burst; the pane
//! shows sparkline characters and the pool, the view redraws in place (one header however many
//! frames went by, no scrolled-off copies in the pane's history), and `q` — in a second run
//! Ctrl-C — ends it with status 0.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require, sleep_burst, Server, SLEEP_TWO_WORKERS};

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A tmux server of this test's own (its socket in a temporary directory), killed on drop.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(require("tmux"))
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the visible pane shows `text`.
    fn wait_for(&self, session: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.screen(session).0.contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the pane:\n{}",
                self.screen(session).0
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visible pane, and the pane with all its history.
    fn screen(&self, session: &str) -> (String, String) {
        (
            self.run(&["capture-pane", "-p", "-t", session]),
            self.run(&["capture-pane", "-p", "-S", "-", "-t", session]),
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// Start `fastpm status --watch` in a new 120×30 session; its exit status goes to `exit_file`.
fn start_watch(tmux: &Tmux, session: &str, port: u16, exit_file: &Path) {
    let cmd = format!(
        "TERM=xterm-256color {} status --watch --url http://127.0.0.1:{port}/status; echo $? > {}; sleep 30",
        common::FASTPM,
        exit_file.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "120",
        "-y",
        "30",
        "sh",
        "-c",
        &cmd,
    ]);
}

fn wait_for_exit(exit_file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(exit_file) {
            if !text.is_empty() {
                return text.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "status --watch did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_draws_sparklines_in_place_and_q_quits() {
    let tmux_bin = require("tmux");
    let server = Server::start(SLEEP_TWO_WORKERS);
    let port = server.status_port();
    let addr = format!("unix:{}", server.path("p.sock").display());
    // A burst for the sparklines, running while the view starts: 30 clients × sleep?ms=100
    // for 2 s, on 2 workers.
    let burst = std::thread::spawn(move || sleep_burst(&addr, 30, Duration::from_secs(2)));
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
    };
    let exit_q = dir.path().join("exit-q");
    start_watch(&tmux, "w", port, &exit_q);
    assert!(burst.join().unwrap() > 0);
    // Several redraws, during and after the burst.
    std::thread::sleep(Duration::from_secs(3));
    let (visible, all) = tmux.screen("w");
    assert!(
        visible.contains("fastpm status --watch") && visible.contains("p        queue"),
        "the view is not on the pane:\n{visible}"
    );
    let pool_line = visible
        .lines()
        .find(|l| l.starts_with("p        queue"))
        .unwrap();
    assert!(
        pool_line.contains('█') && pool_line.chars().filter(|c| SPARKS.contains(c)).count() >= 10,
        "no sparklines: {pool_line}"
    );
    assert!(pool_line.chars().count() <= 120, "{pool_line}");
    assert!(visible.contains("busy:"), "{visible}");
    // In place: one header on the pane and in its whole history, however many frames.
    assert_eq!(
        visible.matches("fastpm status --watch").count(),
        1,
        "{visible}"
    );
    assert_eq!(
        all.matches("fastpm status --watch").count(),
        1,
        "frames scrolled:\n{all}"
    );
    // It keeps redrawing: the busy workers' line changes once the burst is over.
    tmux.wait_for("w", "busy: none");
    tmux.run(&["send-keys", "-t", "w", "q"]);
    assert_eq!(wait_for_exit(&exit_q), "0", "q exits cleanly");
    // The terminal is given back: the view is gone from the pane.
    let (after, _) = tmux.screen("w");
    assert!(
        !after.contains("p        queue"),
        "screen not restored:\n{after}"
    );

    // Ctrl-C ends it the same way.
    let exit_c = dir.path().join("exit-c");
    start_watch(&tmux, "c", port, &exit_c);
    tmux.wait_for("c", "p        queue");
    tmux.run(&["send-keys", "-t", "c", "C-c"]);
    assert_eq!(wait_for_exit(&exit_c), "0", "Ctrl-C exits cleanly");
    drop(tmux_bin);
}
