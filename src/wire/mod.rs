//! The wire layer shared by the service RPC socket, the broker's links and
//! (later) the relay.
//!
//! * `frame` — length-prefixed frames with a protocol version (sans-IO).
//! * `messages` — the serde types that ride in frames.
//! * `assertion` — verifying relay-signed caller assertions.
//! * `codec` — the one place that knows bincode.
//! * `pin` — TLS certificate pinning by SHA-256 fingerprint.
//! * `conn` — quinn glue: endpoints, TLS configs, framed stream I/O, the
//!   liveness watcher and stateless-reset keys.
//! * `mux` — the transport-neutral connection and stream halves (QUIC or
//!   HTTP/2 on TLS/TCP) everything above the wire uses.
//! * `tcp` — the TCP transport: TLS 1.3 + HTTP/2 (h2), `rpc_url`s.
//! * `liveness` — when a silent peer counts as gone (sans-IO).
//! * `relay` — messages of the relay protocol (sans-IO).
//! * `tunnel` — a QUIC connection carried inside a relayed stream (the
//!   end-to-end encryption through the relay); quinn glue like `conn`.
//!
//! **Invariant:** only `conn`, `mux`, `tcp` and `tunnel` touch sockets and streams;
//! everything else is pure.

pub mod assertion;
mod capped;
pub mod codec;
pub mod conn;
pub mod frame;
pub mod liveness;
pub mod messages;
pub mod mux;
pub mod packet_relay;
pub mod pin;
pub mod relay;
#[cfg(test)]
mod roundtrip;
pub mod tcp;
pub mod tunnel;
