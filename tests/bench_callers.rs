//! Benchmark (issue 15): 100 concurrent callers to one device whose
//! connection limit is 4. Every call must succeed (the ones beyond the
//! limit's channel slots queue), and the device must never see more than 4
//! SSH connections. Reports exec/s and latency percentiles, interleaved
//! round by round with the same load on a limit of 1 connection (the
//! anchor: what a single multiplexed connection, like an OpenSSH
//! ControlMaster, gives).
//!
//! Ignored by default; run with a release build:
//! `cargo test --release --test bench_callers -- --ignored --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{init, within};
use switchyard::service::drivers::platform::Platform;
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{DeviceProfile, DeviceTarget};
use switchyard::service::inventory::SessionKind;

const CALLERS: usize = 100;
const ROUNDS: usize = 7;
const T: Duration = Duration::from_secs(60);

fn target(port: u16) -> DeviceTarget {
    DeviceTarget {
        profile: DeviceProfile {
            platform: Platform::Linux,
            session: SessionKind::Exec,
        },
        ..common::loopback_device("bench-1", port, TEST_USER, TEST_PASSWORD)
    }
}

/// One round: `CALLERS` execs at once; each one's latency, and the wall
/// time of the round.
async fn round(pool: &SshPool, t: &DeviceTarget) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let calls = (0..CALLERS).map(|i| async move {
        let begun = Instant::now();
        let command = format!("echo caller-{i}");
        let exec = pool
            .exec(t, std::slice::from_ref(&command), T)
            .await
            .unwrap_or_else(|e| panic!("caller {i}: {e}"));
        let out = exec.results[0]
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("caller {i}: {e}"));
        assert_eq!(out.output.trim(), format!("caller-{i}"));
        begun.elapsed()
    });
    let latencies = futures::future::join_all(calls).await;
    (latencies, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test bench_callers -- --ignored --nocapture"]
async fn hundred_callers_on_four_connections() {
    init();
    // MaxSessions 10 on the device; 8 channels per connection on our side.
    let four_server = Sshd::start(10).await;
    let one_server = Sshd::start(10).await;
    let config = |limit| SshDriverConfig {
        max_connections_per_device: limit,
        ..SshDriverConfig::default()
    };
    let four = SshPool::new(config(4));
    let one = SshPool::new(config(1));
    let (t4, t1) = (target(four_server.port), target(one_server.port));
    // Warm: connections open, host processes cached.
    within(120, "warm-up", round(&four, &t4)).await;
    within(120, "warm-up", round(&one, &t1)).await;

    let mut results = [(Vec::new(), Duration::ZERO), (Vec::new(), Duration::ZERO)];
    for _ in 0..ROUNDS {
        for (slot, (pool, t)) in [(&four, &t4), (&one, &t1)].into_iter().enumerate() {
            let (lat, wall) = within(120, "round", round(pool, t)).await;
            results[slot].0.extend(lat);
            results[slot].1 += wall;
        }
    }
    assert!(
        four_server.accepted() <= 4,
        "{} connections",
        four_server.accepted()
    );
    assert_eq!(one_server.accepted(), 1);
    println!(
        "| connections per device | exec/s | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|"
    );
    for (label, (mut lat, wall)) in ["4", "1 (anchor)"].into_iter().zip(results) {
        lat.sort();
        let rate = lat.len() as f64 / wall.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {label} | {rate:.0} | {:.1} | {:.1} | {:.1} |",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap())
        );
    }
}
