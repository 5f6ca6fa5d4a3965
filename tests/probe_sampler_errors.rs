//! A probe that starts failing is logged once, not at every tick, and the other pools go on.
//! (Own test binary: it installs a global tracing subscriber to read the log.)

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::SharedWriter;
use fastpm::listen::{bind, BindOptions, ListenAddress};
use fastpm::probe::{spawn_sampler, QueueProbe};
use fastpm::scoreboard::Scoreboard;

#[test]
fn a_failing_probe_is_logged_once_and_other_pools_keep_sampling() {
    let log = SharedWriter::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let gone = bind(
        &ListenAddress::Unix(dir.path().join("gone.sock")),
        &BindOptions::default(),
    )
    .unwrap();
    let kept_path = dir.path().join("kept.sock");
    let kept = bind(
        &ListenAddress::Unix(kept_path.clone()),
        &BindOptions::default(),
    )
    .unwrap();
    let gone_probe = QueueProbe::for_listener(&gone).unwrap();
    drop(gone); // the socket no longer exists: every read of its probe fails from now on

    let scoreboard = Arc::new(Scoreboard::create(&[1, 1]).unwrap());
    let sampler = spawn_sampler(
        vec![
            (0, gone_probe),
            (1, QueueProbe::for_listener(&kept).unwrap()),
        ],
        scoreboard.clone(),
    );
    let _client = UnixStream::connect(&kept_path).unwrap(); // keeps the sampler at its busy pace
    let deadline = Instant::now() + Duration::from_secs(3);
    while scoreboard.pool(1).samples.load(Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the healthy pool is not sampled");
        std::thread::sleep(Duration::from_millis(5));
    }
    sampler.stop();

    assert_eq!(
        scoreboard.pool(0).samples.load(Relaxed),
        0,
        "failed reads are not samples"
    );
    assert_eq!(scoreboard.pool(1).listen_queue.load(Relaxed), 1);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings = text.matches("cannot read the listen queue").count();
    assert_eq!(warnings, 1, "log:\n{text}");
    assert!(text.contains("pool=0"), "log:\n{text}");
}
