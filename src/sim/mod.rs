//! Simulated network devices, for demos, tests and benchmarks.
//!
//! `model` is the device's CLI as pure functions (no I/O); `shell` is the
//! interactive line discipline over it (also no I/O); `server` puts both
//! behind a real SSH server, one listener per simulated device; `telnet`
//! behind a Telnet listener too, after `login`'s prompts (no I/O).

pub mod login;
pub mod model;
pub mod server;
pub mod shell;
mod telnet;

pub use model::{CliState, Output, SimDevice};
