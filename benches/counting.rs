//! Criterion benchmarks of what counting costs a request, side by side: the scoreboard's raw
//! atomics as the request path wrote them before, and the same counts through the `metrics`
//! facade's handles (`status::recorder`), whose cells are those atomics. One thread, so the
//! figures are the facade's own overhead (a dynamic call, the board lookup, the seconds ↔
//! microseconds conversion), not cache-line contention, which both pay alike.
//!
//! Run: `cargo bench --bench counting`.

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fastpm::scoreboard::Scoreboard;
use fastpm::status::recorder::PoolMetrics;

fn counting(c: &mut Criterion) {
    let scoreboard = Arc::new(Scoreboard::create(&[4]).expect("scoreboard"));
    let metrics = PoolMetrics::register(&scoreboard, 0);
    let board = scoreboard.pool(0);
    let mut group = c.benchmark_group("count one request");
    group.bench_function("raw atomic: accepted_conn", |b| {
        b.iter(|| board.accepted_conn.fetch_add(black_box(1), Relaxed))
    });
    group.bench_function("facade counter: accepted_conn", |b| {
        b.iter(|| metrics.accepted_conn.increment(black_box(1)))
    });
    group.bench_function("raw: queue wait histogram", |b| {
        b.iter(|| board.queue_wait.record(Some(black_box(1_234))))
    });
    group.bench_function("facade histogram: queue wait", |b| {
        b.iter(|| metrics.record_queue_wait(Some(black_box(1_234))))
    });
    group.bench_function("raw: app served (count + time)", |b| {
        b.iter(|| board.app_served(black_box(50_000)))
    });
    group.bench_function("facade histogram: request duration", |b| {
        b.iter(|| {
            metrics
                .request_duration
                .record(black_box(Duration::from_micros(50_000)))
        })
    });
    group.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
