//! Dead-peer detection (sans-IO): a peer that sends nothing while someone
//! waits on it is declared gone after a bounded silence.
//!
//! QUIC alone notices a vanished peer only at its idle timeout (30 s). The
//! caller's end of every link and relay connection sends a keep-alive PING
//! each [`KEEP_ALIVE`] (`TransportLimits::keep_alive`), which a live peer
//! acknowledges within its ACK delay (25 ms), so a live peer is never
//! silent for much more than that. [`Silence`] watches the count of
//! datagrams received: while something waits on the connection (a call in
//! flight; for a standing relay connection, always), no new datagram for
//! [`SILENCE`] means the peer is gone, and `conn::watch_liveness` closes
//! the connection, which fails every call on it at once. The watcher is
//! armed by the first waiter and parks (no timer, no sampling) when the
//! last one leaves, so an idle link does no periodic work; a standing
//! relay connection is always armed.
//!
//! **The bound:** a call waits at most `silence + tick` (2.25 s by
//! default; documented as 3 s) past the peer's last datagram, or past the
//! call's start if the peer was already silent. A restarted peer ends old
//! connections sooner, at the first packet they send it (a QUIC stateless
//! reset under the reset key every endpoint derives from its long-term
//! key, see `conn::reset_key`).

use std::time::{Duration, Instant};

/// Default keep-alive period of the caller's end (a PING after this long
/// without sending anything the peer must acknowledge).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Default silence after which a peer that is waited on is gone: two
/// keep-alive periods, so one lost PING or ACK is tolerated.
pub const SILENCE: Duration = Duration::from_secs(2);
/// How often the watcher samples the connection while it is armed.
pub const TICK: Duration = Duration::from_millis(250);

/// What the watcher decided at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The peer spoke recently, or nobody is waiting.
    Alive,
    /// Nothing came for this long while someone waited.
    Silent(Duration),
}

/// The silence watcher's state: fed samples of (time, datagrams received
/// so far, whether anyone waits), it says when the peer has been silent
/// for `limit` while waited on.
#[derive(Debug, Clone)]
pub struct Silence {
    limit: Duration,
    received: u64,
    /// Since when nothing came while someone waited; `None` while nobody
    /// waits.
    quiet_since: Option<Instant>,
}

impl Silence {
    /// A watcher that declares a peer gone after `limit` of silence.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            received: 0,
            quiet_since: None,
        }
    }

    /// Nobody waits any more (the watcher stops sampling): the next
    /// waiter's silence is measured from its own start.
    pub fn rest(&mut self) {
        self.quiet_since = None;
    }

    /// One sample: `received` is the connection's running count of
    /// datagrams received, `waiting` whether anything waits on the peer.
    /// Silence is measured from the later of the last new datagram and the
    /// moment waiting began (a call on a connection idle for an hour gets
    /// the whole `limit`).
    pub fn observe(&mut self, now: Instant, received: u64, waiting: bool) -> Verdict {
        let progressed = received != self.received;
        self.received = received;
        if !waiting {
            self.quiet_since = None;
            return Verdict::Alive;
        }
        let since = match self.quiet_since {
            Some(since) if !progressed => since,
            _ => now,
        };
        self.quiet_since = Some(since);
        let quiet = now.saturating_duration_since(since);
        if quiet >= self.limit {
            Verdict::Silent(quiet)
        } else {
            Verdict::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_peer_silent_while_waited_on_is_declared_gone_after_the_limit() {
        let t0 = Instant::now();
        let mut s = Silence::new(2000 * MS);
        assert_eq!(s.observe(t0, 10, true), Verdict::Alive);
        assert_eq!(s.observe(t0 + 1999 * MS, 10, true), Verdict::Alive);
        assert_eq!(
            s.observe(t0 + 2000 * MS, 10, true),
            Verdict::Silent(2000 * MS)
        );
    }

    #[test]
    fn every_new_datagram_restarts_the_clock() {
        let t0 = Instant::now();
        let mut s = Silence::new(2000 * MS);
        s.observe(t0, 1, true);
        for i in 1..20u32 {
            // A keep-alive acknowledged every second: never silent.
            assert_eq!(
                s.observe(t0 + i * 1000 * MS, 1 + u64::from(i), true),
                Verdict::Alive
            );
        }
        assert_eq!(
            s.observe(t0 + 21_000 * MS, 20, true),
            Verdict::Silent(2000 * MS)
        );
    }

    #[test]
    fn nobody_waiting_means_no_verdict_and_waiting_starts_a_fresh_clock() {
        let t0 = Instant::now();
        let mut s = Silence::new(2000 * MS);
        // An idle connection silent for a minute is not declared gone ...
        assert_eq!(s.observe(t0, 5, false), Verdict::Alive);
        assert_eq!(s.observe(t0 + 60_000 * MS, 5, false), Verdict::Alive);
        // ... and a call starting on it gets the whole limit.
        assert_eq!(s.observe(t0 + 60_000 * MS, 5, true), Verdict::Alive);
        assert_eq!(s.observe(t0 + 61_999 * MS, 5, true), Verdict::Alive);
        assert!(matches!(
            s.observe(t0 + 62_000 * MS, 5, true),
            Verdict::Silent(_)
        ));
    }
}
