//! The fuzzing engine: deterministic, seeded mutation of a corpus of valid
//! encodings, on the stable toolchain (no libFuzzer, no compiler
//! instrumentation; see ARCHITECTURE.md, "Fuzzing", for why).
//!
//! Each input is either a corpus entry put through 1–8 mutations (bit
//! flips, bytes set to boundary values, bincode varint markers and
//! oversized lengths, inserted, deleted, duplicated or truncated runs,
//! splices of two entries) or, one time in sixteen, plain random bytes.
//! A target is a function of the bytes; it fails by panicking, which the
//! engine catches and reports with the input (hex), the seed and the input's
//! number, so any failure replays exactly (`replay`).

use std::panic::{AssertUnwindSafe, catch_unwind};

/// One decoder under test.
pub struct Target {
    pub name: &'static str,
    /// Runs the decoder on one input; panics on a bug.
    pub run: fn(&[u8]),
    /// Valid encodings to mutate (at least one).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// A failing input, enough to replay it.
#[derive(Debug)]
pub struct Failure {
    pub target: &'static str,
    pub seed: u64,
    pub index: u64,
    pub input_hex: String,
    pub panic: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "target {} failed on input #{} of seed {}: {}\ninput: {}",
            self.target, self.index, self.seed, self.panic, self.input_hex
        )
    }
}

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that sit on boundaries of the formats: bincode's varint markers
/// (251–254 announce 2, 4, 8, 16 more bytes), sign bits, all-ones.
const INTERESTING: [u8; 12] = [
    0, 1, 2, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, 0x10,
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = input.len();
    match rng.below(9) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        // A boundary value at a random place.
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // A lying length: a varint marker followed by a huge value.
        2 => {
            let i = rng.below(len + 1);
            let mut lie = vec![0xfd];
            lie.extend_from_slice(&(rng.next() | 1 << 40).to_le_bytes());
            input.splice(i..i, lie);
        }
        // Random bytes inserted.
        3 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(i..i, bytes);
        }
        // A run deleted.
        4 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below(len - i);
            input.drain(i..i + n.min(16));
        }
        // A run duplicated.
        5 if len > 0 => {
            let i = rng.below(len);
            let n = (1 + rng.below(len - i)).min(64);
            let run = input[i..i + n].to_vec();
            input.splice(i..i, run);
        }
        // Truncated.
        6 if len > 0 => input.truncate(rng.below(len)),
        // Spliced with another entry.
        7 => {
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        // A random byte anywhere, the 4-byte big-endian word (frame
        // lengths) at a random place set huge.
        _ if len >= 4 => {
            let i = rng.below(len - 3);
            input[i..i + 4].copy_from_slice(&(rng.next() as u32 | 0x0010_0000).to_be_bytes());
        }
        _ => input.push(rng.next() as u8),
    }
}

/// The `index`-th input of `seed` for a target whose corpus is `corpus`.
fn input(seed: u64, index: u64, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng(seed ^ index.wrapping_mul(0xd134_2543_de82_ef95));
    if rng.below(16) == 0 {
        let n = rng.below(64);
        return (0..n).map(|_| rng.next() as u8).collect();
    }
    let mut input = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(8) {
        mutate(&mut rng, &mut input, corpus);
    }
    input
}

/// Runs `target` on `count` inputs of `seed`; the first failure, if any.
pub fn run(target: &Target, seed: u64, count: u64) -> Result<(), Box<Failure>> {
    let corpus = (target.seeds)();
    assert!(!corpus.is_empty(), "target {} has no seeds", target.name);
    // Seeds themselves are inputs too.
    for (i, seed_input) in corpus.iter().enumerate() {
        check(target, seed, u64::MAX - i as u64, seed_input)?;
    }
    for index in 0..count {
        check(target, seed, index, &input(seed, index, &corpus))?;
    }
    Ok(())
}

/// Runs the `index`-th input of `seed` again (to debug a reported failure).
pub fn replay(target: &Target, seed: u64, index: u64) -> Result<(), Box<Failure>> {
    let corpus = (target.seeds)();
    check(target, seed, index, &input(seed, index, &corpus))
}

fn check(target: &Target, seed: u64, index: u64, data: &[u8]) -> Result<(), Box<Failure>> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(data))).map_err(|panic| {
        let panic = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Box::new(Failure {
            target: target.name,
            seed,
            index,
            input_hex: data.iter().map(|b| format!("{b:02x}")).collect(),
            panic,
        })
    })
}
