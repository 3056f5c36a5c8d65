//! The fuzz targets of `fuzz/` under `cargo test`: each runs briefly here
//! (a fixed number of inputs of a fixed seed, so a failure replays), and
//! `campaign` runs a long one (README, "Fuzzing"):
//!
//! ```text
//! SWITCHYARD_FUZZ_INPUTS=10000000 SWITCHYARD_FUZZ_SEED=1 \
//!     cargo test --test fuzz -- --ignored --nocapture campaign
//! ```

#[path = "../fuzz/engine.rs"]
mod engine;
#[path = "../fuzz/targets.rs"]
mod targets;

use engine::Target;
use targets::TARGETS;

/// Inputs per target in a brief run: a few seconds each in a debug build.
const BRIEF: u64 = 30_000;
const SEED: u64 = 0x5717_c4a4_d000_0001;

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

fn brief(name: &str) {
    if let Err(failure) = engine::run(target(name), SEED, BRIEF) {
        panic!("{failure}");
    }
}

#[test]
fn fuzz_frame() {
    brief("frame");
}

#[test]
fn fuzz_service_messages() {
    brief("service_messages");
}

#[test]
fn fuzz_relay_messages() {
    brief("relay_messages");
}

#[test]
fn fuzz_relay_json() {
    brief("relay_json");
}

#[test]
fn fuzz_packet_header() {
    brief("packet_header");
}

#[test]
fn fuzz_tunnel_stream() {
    brief("tunnel_stream");
}

#[test]
fn fuzz_broker_api() {
    brief("broker_api");
}

#[test]
fn every_target_runs_in_ci() {
    // A target added to the table must get a brief test above.
    let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "frame",
            "service_messages",
            "relay_messages",
            "relay_json",
            "packet_header",
            "tunnel_stream",
            "broker_api"
        ]
    );
}

#[test]
fn the_engine_catches_and_reports_a_failing_input() {
    fn fragile(data: &[u8]) {
        assert!(!data.contains(&0xfd), "found the marker");
    }
    let t = Target {
        name: "fragile",
        run: fragile,
        seeds: || vec![b"abc".to_vec()],
    };
    let failure = engine::run(&t, 7, 100_000).expect_err("a mutation inserts 0xfd");
    assert!(failure.panic.contains("found the marker"));
    assert!(failure.input_hex.contains("fd"));
    // The report is enough to replay it.
    let again = engine::replay(&t, failure.seed, failure.index).expect_err("replays");
    assert_eq!(again.input_hex, failure.input_hex);
}

/// A long campaign over every target, at least `SWITCHYARD_FUZZ_INPUTS`
/// mutated inputs in all (default 10,000,000), split evenly (each target's
/// seeds run too, not counted).
#[test]
#[ignore = "long: run by hand (README, Fuzzing)"]
fn campaign() {
    let total: u64 = std::env::var("SWITCHYARD_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let seed: u64 = std::env::var("SWITCHYARD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // Rounded up, so the campaign runs at least `total` inputs.
    let each = total.div_ceil(TARGETS.len() as u64);
    let started = std::time::Instant::now();
    let mut ran = 0;
    for t in TARGETS {
        let t0 = std::time::Instant::now();
        if let Err(failure) = engine::run(t, seed, each) {
            panic!("{failure}");
        }
        ran += each;
        eprintln!(
            "{:<18} {each} inputs, 0 failures, {:?}",
            t.name,
            t0.elapsed()
        );
    }
    eprintln!(
        "campaign: {ran} inputs over {} targets, seed {seed}, 0 failures, {:?}",
        TARGETS.len(),
        started.elapsed()
    );
}
