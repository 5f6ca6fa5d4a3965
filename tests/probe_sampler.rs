//! The sampler thread against real sockets: it records the kernel's readings on the
//! scoreboard, tracks maxima, counts full samples and drops, and stops promptly.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpm::listen::{bind, BindOptions, ListenAddress};
use fastpm::probe::{spawn_sampler, QueueProbe};
use fastpm::scoreboard::{PoolBoard, Scoreboard, WorkerState, UNKNOWN};
use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

fn wait_for(what: &str, board: &PoolBoard, ok: impl Fn(&PoolBoard) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ok(board) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: queue {} max {} len {} drops {} full {} samples {}",
            board.listen_queue.load(Relaxed),
            board.max_listen_queue.load(Relaxed),
            board.listen_queue_len.load(Relaxed),
            board.listen_drops.load(Relaxed),
            board.queue_full_samples.load(Relaxed),
            board.samples.load(Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sampler_records_unix_and_tcp_queues_and_stops_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("sampled.sock");
    let unix = bind(
        &ListenAddress::Unix(unix_path.clone()),
        &BindOptions {
            backlog: 4,
            ..BindOptions::default()
        },
    )
    .unwrap();
    let tcp = bind(
        &"127.0.0.1:0".parse().unwrap(),
        &BindOptions {
            backlog: 2,
            ..BindOptions::default()
        },
    )
    .unwrap();
    let ListenAddress::Tcp(std::net::SocketAddr::V4(tcp_addr)) = tcp.address().unwrap() else {
        panic!()
    };

    let scoreboard = Arc::new(Scoreboard::create(&[2, 1]).unwrap());
    let sampler = spawn_sampler(
        vec![
            (0, QueueProbe::for_listener(&unix).unwrap()),
            (1, QueueProbe::for_listener(&tcp).unwrap()),
        ],
        scoreboard.clone(),
    );
    let unix_board = scoreboard.pool(0);
    let tcp_board = scoreboard.pool(1);

    wait_for("first samples", unix_board, |b| b.samples.load(Relaxed) > 0);
    assert_eq!(unix_board.listen_queue_len.load(Relaxed), 4);
    assert_eq!(
        unix_board.listen_drops.load(Relaxed),
        UNKNOWN,
        "unix counts no drops"
    );
    wait_for("tcp samples", tcp_board, |b| b.samples.load(Relaxed) > 0);
    assert_eq!(tcp_board.listen_queue_len.load(Relaxed), 2);
    assert_eq!(tcp_board.listen_drops.load(Relaxed), 0);

    // Three unix clients wait; then two are accepted: the max stays at 3.
    let unix_clients: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&unix_path).unwrap())
        .collect();
    wait_for("unix queue 3", unix_board, |b| {
        b.listen_queue.load(Relaxed) == 3
    });
    unix.accept().unwrap();
    unix.accept().unwrap();
    wait_for("unix queue 1", unix_board, |b| {
        b.listen_queue.load(Relaxed) == 1
    });
    assert_eq!(unix_board.max_listen_queue.load(Relaxed), 3);
    assert_eq!(
        unix_board.queue_full_samples.load(Relaxed),
        0,
        "3 of 4+1 is not full"
    );

    // Overflow the TCP queue (capacity 3): full samples and kernel drops appear.
    let tcp_clients: Vec<OwnedFd> = (0..8)
        .map(|_| {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            match connect(fd.as_raw_fd(), &SockaddrIn::from(tcp_addr)) {
                Ok(()) | Err(Errno::EINPROGRESS) => fd,
                Err(e) => panic!("connect: {e}"),
            }
        })
        .collect();
    wait_for("tcp full and dropping", tcp_board, |b| {
        b.queue_full_samples.load(Relaxed) > 0 && b.listen_drops.load(Relaxed) > 0
    });
    assert_eq!(tcp_board.max_listen_queue.load(Relaxed), 3);

    // Busy workers are tracked as max active processes.
    let slots = scoreboard.slots(0);
    slots[0].claim(1);
    slots[1].claim(2);
    slots[0].set_state(WorkerState::Running);
    slots[1].set_state(WorkerState::Reading);
    wait_for("max active 2", unix_board, |b| {
        b.max_active_processes.load(Relaxed) == 2
    });
    slots[1].set_state(WorkerState::Idle);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        unix_board.max_active_processes.load(Relaxed),
        2,
        "a maximum never goes down"
    );

    // Stop: returns at once (the thread waits on a channel, not a sleep) and sampling ends.
    let started = Instant::now();
    sampler.stop();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "stop took {:?}",
        started.elapsed()
    );
    let samples = unix_board.samples.load(Relaxed);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        unix_board.samples.load(Relaxed),
        samples,
        "sampler still running after stop"
    );
    drop((unix_clients, tcp_clients));
}

#[test]
fn sampler_ticks_fast_while_a_queue_is_non_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tempo.sock");
    let unix = bind(&ListenAddress::Unix(path.clone()), &BindOptions::default()).unwrap();
    let scoreboard = Arc::new(Scoreboard::create(&[1]).unwrap());
    let sampler = spawn_sampler(
        vec![(0, QueueProbe::for_listener(&unix).unwrap())],
        scoreboard.clone(),
    );
    let board = scoreboard.pool(0);

    let count_over = |window: Duration| {
        let before = board.samples.load(Relaxed);
        std::thread::sleep(window);
        board.samples.load(Relaxed) - before
    };
    let idle = count_over(Duration::from_millis(200));
    let _client = UnixStream::connect(&path).unwrap();
    let busy = count_over(Duration::from_millis(200));
    // Idle: one tick per 20 ms (≈10 in 200 ms); busy: one per 2 ms (≈100). Loose bounds, so a
    // loaded machine does not fail it, yet a sampler that ignores the queue does.
    assert!(idle <= 15, "idle ticks {idle}");
    assert!(busy >= 3 * idle.max(1), "busy ticks {busy} vs idle {idle}");
    sampler.stop();
}
