//! The wire layer shared by the service RPC socket, the broker's links and
//! (later) the relay.
//!
//! * `frame` — length-prefixed frames with a protocol version (sans-IO).
//! * `messages` — the serde types that ride in frames.
//! * `codec` — the one place that knows bincode.
//! * `pin` — TLS certificate pinning by SHA-256 fingerprint.
//! * `conn` — quinn glue: endpoints, TLS configs, framed stream I/O.
//!
//! **Invariant:** only `conn` touches sockets; everything else is pure.

pub mod codec;
pub mod conn;
pub mod frame;
pub mod messages;
pub mod pin;
