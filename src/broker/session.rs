//! `Session` actor: one per `Client.create()`.
//!
//! Owns: the session's attach stream (the sending half of its events) and
//! the cancellation token every request of the session runs under.
//!
//! Takes: `AttachSession` (once; returns the event stream), `EndSession`,
//! `NotifyShutdown`.
//!
//! On failure: when the holder's stream goes away (the caller closed it,
//! exited or was killed), or nobody attaches within the grace period, the
//! session ends: its in-flight requests are cancelled at once and the
//! registry releases its links.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::error::BrokerError;
use super::registry::{SessionEnded, SessionRegistry};

/// What a session's holder is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Attached { session_id: String },
    ShuttingDown { reason: String },
}

pub struct Session {
    id: String,
    registry: Addr<SessionRegistry>,
    cancel: CancellationToken,
    events: Option<mpsc::Sender<SessionEvent>>,
    attach_grace: Duration,
    ending: bool,
}

impl Session {
    pub fn new(
        id: String,
        registry: Addr<SessionRegistry>,
        cancel: CancellationToken,
        attach_grace: Duration,
    ) -> Self {
        Self {
            id,
            registry,
            cancel,
            events: None,
            attach_grace,
            ending: false,
        }
    }

    fn end(&mut self, ctx: &mut Context<Self>) {
        if let Some(released) = self.release() {
            ctx.spawn(released);
        }
    }

    /// Cancels the session's requests and has the registry forget it; the
    /// future completes once the registry has (so a caller that closes a
    /// session may open another at once, even at the per-user limit).
    /// `None` if the session is already ending.
    fn release(&mut self) -> Option<impl ActorFuture<Self, Output = ()> + 'static> {
        if std::mem::replace(&mut self.ending, true) {
            return None;
        }
        self.cancel.cancel();
        let registry = self.registry.clone();
        let id = self.id.clone();
        Some(
            async move {
                let _ = registry.send(SessionEnded(id)).await;
            }
            .into_actor(self)
            .map(|_, _, ctx: &mut Context<Self>| ctx.stop()),
        )
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_later(self.attach_grace, |act, ctx| {
            if act.events.is_none() {
                info!(session = %act.id, "no attach within the grace period; ending session");
                act.end(ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.cancel.cancel();
        info!(session = %self.id, "session ended");
    }
}

#[derive(Message)]
#[rtype(result = "Result<mpsc::Receiver<SessionEvent>, BrokerError>")]
pub struct AttachSession;

impl Handler<AttachSession> for Session {
    type Result = Result<mpsc::Receiver<SessionEvent>, BrokerError>;

    fn handle(&mut self, _: AttachSession, ctx: &mut Self::Context) -> Self::Result {
        if self.ending {
            return Err(BrokerError::NotFound(format!(
                "session {} has ended",
                self.id
            )));
        }
        if self.events.is_some() {
            return Err(BrokerError::AlreadyExists(format!(
                "session {} is already attached",
                self.id
            )));
        }
        let (tx, rx) = mpsc::channel(8);
        let _ = tx.try_send(SessionEvent::Attached {
            session_id: self.id.clone(),
        });
        let watch = tx.clone();
        self.events = Some(tx);
        ctx.spawn(
            async move { watch.closed().await }
                .into_actor(self)
                .map(|_, act, ctx| {
                    info!(session = %act.id, "attach stream closed");
                    act.end(ctx);
                }),
        );
        Ok(rx)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct EndSession;

impl Handler<EndSession> for Session {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: EndSession, _: &mut Self::Context) -> Self::Result {
        match self.release() {
            Some(released) => Box::pin(released),
            None => Box::pin(fut::ready(())),
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyShutdown(pub String);

impl Handler<NotifyShutdown> for Session {
    type Result = ();

    fn handle(&mut self, msg: NotifyShutdown, _: &mut Self::Context) {
        if let Some(tx) = &self.events {
            let _ = tx.try_send(SessionEvent::ShuttingDown { reason: msg.0 });
        }
    }
}
