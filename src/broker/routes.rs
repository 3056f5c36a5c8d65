//! The routing snapshot: which link serves which session service or named
//! service, published by the `SessionRegistry` after every change.
//!
//! Requests are routed from the latest snapshot without a message round
//! trip to the registry (a cross-thread hand-off costs ~45 µs here, a third
//! of a whole request). Snapshots are immutable; the registry alone builds
//! them, so routing decisions still have one owner.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use actix::Recipient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::BrokerError;
use super::link::LinkChannel;
use super::link_actor::Acquire;
use super::peer::{Owner, Peer, owner_for};

/// Which service a call is for.
#[derive(Debug, Clone)]
pub enum ServiceRef {
    InSession {
        session_id: String,
        service_id: String,
    },
    Named(String),
}

/// How to reach one link.
#[derive(Clone)]
pub struct LinkRoute {
    pub acquire: Recipient<Acquire>,
    /// The link's live channel, as the link publishes it.
    pub channel: watch::Receiver<Option<LinkChannel>>,
    pub in_flight: Arc<AtomicU32>,
}

#[derive(Clone)]
pub struct SessionRoute {
    pub uid: u32,
    pub cancel: CancellationToken,
    pub in_flight: Arc<AtomicU32>,
    pub services: HashMap<String, LinkRoute>,
}

#[derive(Clone)]
pub struct NamedRoute {
    pub route: LinkRoute,
    /// Milliseconds since `Routes::epoch` of the last use.
    pub last_used: Arc<AtomicU64>,
}

/// One published routing table.
#[derive(Clone)]
pub struct Routes {
    pub sessions: HashMap<String, SessionRoute>,
    pub named: HashMap<(Owner, String), NamedRoute>,
    pub share_group: Option<u32>,
    pub epoch: Instant,
    /// Parent of the cancellation of calls on named services.
    pub cancel: CancellationToken,
}

/// What a request needs to run.
pub struct Resolved {
    pub acquire: Recipient<Acquire>,
    /// The link's channel while it is up (no further message needed).
    pub channel: Option<LinkChannel>,
    /// Where the link publishes its channel (to wait for it to come up).
    pub watch: watch::Receiver<Option<LinkChannel>>,
    pub link_in_flight: Arc<AtomicU32>,
    /// Cancelled when the session (or the broker) ends.
    pub cancel: CancellationToken,
    pub session_in_flight: Option<Arc<AtomicU32>>,
}

impl Routes {
    pub fn new(share_group: Option<u32>, cancel: CancellationToken) -> Self {
        Self {
            sessions: HashMap::new(),
            named: HashMap::new(),
            share_group,
            epoch: Instant::now(),
            cancel,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Finds the link for `service` as seen by `peer`.
    pub fn resolve(&self, peer: &Peer, service: &ServiceRef) -> Result<Resolved, BrokerError> {
        let (route, cancel, session_in_flight) = match service {
            ServiceRef::InSession {
                session_id,
                service_id,
            } => {
                let session = self.sessions.get(session_id).ok_or_else(|| {
                    BrokerError::NotFound(format!("no session {session_id:?} (it may have ended)"))
                })?;
                if session.uid != peer.uid {
                    return Err(BrokerError::PermissionDenied(format!(
                        "session {session_id:?} belongs to another user"
                    )));
                }
                let route = session.services.get(service_id).ok_or_else(|| {
                    BrokerError::NotFound(format!(
                        "no service {service_id:?} in session {session_id:?}"
                    ))
                })?;
                (
                    route,
                    session.cancel.clone(),
                    Some(session.in_flight.clone()),
                )
            }
            ServiceRef::Named(name) => {
                let owner = owner_for(peer, self.share_group);
                let named = self.named.get(&(owner, name.clone())).ok_or_else(|| {
                    BrokerError::NotFound(format!(
                        "no named service {name:?}; create it with `switchyard connect direct {name} ...`"
                    ))
                })?;
                named.last_used.store(self.now_ms(), Ordering::Relaxed);
                (&named.route, self.cancel.child_token(), None)
            }
        };
        Ok(Resolved {
            acquire: route.acquire.clone(),
            channel: route.channel.borrow().clone(),
            watch: route.channel.clone(),
            link_in_flight: route.in_flight.clone(),
            cancel,
            session_in_flight,
        })
    }
}

/// A link ready for one call: its channel, the in-flight counters the call
/// holds while it runs, and what cancels it.
pub struct OpenLink {
    pub channel: super::link::LinkChannel,
    pub in_flight: super::link_actor::InFlight,
    pub cancel: CancellationToken,
}

impl Resolved {
    /// The link's live channel (fast path: the one it published; else ask
    /// the link, which fails fast while it reconnects and starts an
    /// attempt), counted in flight on the link and the session.
    pub async fn open(self) -> Result<OpenLink, BrokerError> {
        let (channel, mut in_flight) = match self.channel {
            Some(channel) => (
                channel,
                super::link_actor::InFlight::new(vec![self.link_in_flight]),
            ),
            None => {
                let acquired = self
                    .acquire
                    .send(Acquire { hold: false })
                    .await
                    .map_err(BrokerError::mailbox)??;
                (acquired.channel, acquired.in_flight)
            }
        };
        if let Some(counter) = self.session_in_flight {
            in_flight = in_flight.also(counter);
        }
        Ok(OpenLink {
            channel,
            in_flight,
            cancel: self.cancel,
        })
    }
}
