//! The wire layer shared by the service RPC socket and the relay.
//!
//! **Invariant:** nothing under `wire` opens sockets except `conn` (added with
//! the RPC socket); framing and handshakes are pure functions over bytes.

pub mod codec;
