//! QUIC or TCP: which transport an outbound connection uses when both
//! are possible (`[broker] transport`), and the race between them
//! (QUIC preferred by a head start). Used by the broker's direct links and
//! relay logins and by the service's relay agent; no sockets here.

use std::future::Future;
use std::time::Duration;

/// Which transport a link to a QUIC address uses when its service also
/// listens on TCP (`[broker] transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
    /// QUIC preferred: TCP starts after `quic_head_start` (or at once when
    /// QUIC fails), the first login to complete wins, and a link on TCP
    /// tries QUIC again every `quic_probe` (moving new calls back to QUIC
    /// when it works).
    Auto,
    /// QUIC only (no TCP fallback).
    Quic,
    /// TCP only (UDP known to be blocked).
    Tcp,
}

impl TransportMode {
    /// `auto`, `quic` or `tcp` (the config's words).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "quic" => Some(Self::Quic),
            "tcp" => Some(Self::Tcp),
            _ => None,
        }
    }
}

/// How links choose between QUIC and TCP (see [`TransportMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportPolicy {
    pub mode: TransportMode,
    /// QUIC's head start over TCP in a race.
    pub quic_head_start: Duration,
    /// How often a link that fell back to TCP tries QUIC again.
    pub quic_probe: Duration,
}

impl Default for TransportPolicy {
    fn default() -> Self {
        Self {
            mode: TransportMode::Auto,
            quic_head_start: Duration::from_millis(250),
            quic_probe: Duration::from_secs(30),
        }
    }
}

/// QUIC and TCP raced for one login: `tcp` starts `head_start` after
/// `quic` or when `quic` fails, whichever is first; the first to succeed
/// wins and the other is dropped (its handshake abandoned). When both
/// fail, QUIC's error unless `weak` says it only timed out or found
/// nothing (then TCP's, which says more: refused, a proxy's answer).
pub async fn race<T, E: Clone>(
    quic: impl Future<Output = Result<T, E>>,
    head_start: Duration,
    tcp: impl Future<Output = Result<T, E>>,
    weak: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let quic = std::pin::pin!(quic);
    let mut quic = futures::FutureExt::fuse(quic);
    let start_tcp = tokio::time::sleep(head_start);
    tokio::pin!(start_tcp);
    let quic_error = tokio::select! {
        r = &mut quic => match r {
            Ok(won) => return Ok(won),
            Err(e) => Some(e),
        },
        _ = &mut start_tcp => None,
    };
    let tcp = std::pin::pin!(tcp);
    let mut tcp = futures::FutureExt::fuse(tcp);
    let (mut quic_error, mut tcp_error) = (quic_error, None);
    loop {
        tokio::select! {
            r = &mut quic, if quic_error.is_none() => match r {
                Ok(won) => return Ok(won),
                Err(e) => quic_error = Some(e),
            },
            r = &mut tcp, if tcp_error.is_none() => match r {
                Ok(won) => return Ok(won),
                Err(e) => tcp_error = Some(e),
            },
        }
        if let (Some(q), Some(t)) = (&quic_error, &tcp_error) {
            return Err(if weak(q) { t.clone() } else { q.clone() });
        }
    }
}
