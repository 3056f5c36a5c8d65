//! `IntegratedLink` actor: the service library run inside the broker, over
//! an inventory database on this host — no RPC socket, no network.
//!
//! Owns: the opened inventory and its drivers (one `ServiceOps`), for one
//! owner and one database file. It sits beside `DirectLink` behind the same
//! link interface, so inventory, exec and terminal behave exactly as over a
//! direct link.
//!
//! Takes: `Acquire` (opens the inventory on first use — concurrent first
//! callers share one open), `Release`, `LinkStatus`, `CloseLink`.
//!
//! On failure: a wrong admin password or a missing database fails the
//! callers waiting for it with a clear error; the file is left untouched
//! (see `Inventory::open`), and a link nobody holds is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use tracing::{info, warn};

use super::link::{LinkChannel, LinkError};
use super::link_actor::{
    Acquire, Acquired, CloseLink, Hold, LinkActor, LinkCommon, LinkInfo, LinkState, LinkStatus,
    Release, Transport, answer_waiters, release, stop_and_report,
};
use crate::secret::Secret;
use crate::service::drivers::Drivers;
use crate::service::drivers::ssh::SshDriverConfig;
use crate::service::exec_limits::ExecLimits;
use crate::service::inventory::{Inventory, InventoryError};
use crate::service::ops::{Principal, ServiceOps};
use crate::wire::messages::{ErrorCode, WireError};

pub struct NewIntegratedLink {
    pub common: LinkCommon,
    pub db: PathBuf,
    pub admin_password: Secret,
    pub ssh: SshDriverConfig,
    pub exec: ExecLimits,
}

pub struct IntegratedLink {
    common: LinkCommon,
    db: PathBuf,
    /// Needed until the inventory is open; wiped then.
    admin_password: Option<Secret>,
    ssh: SshDriverConfig,
    exec: ExecLimits,
    ops: Option<(Arc<ServiceOps>, Arc<Principal>)>,
    state: LinkState,
    opening: bool,
    last_error: Option<LinkError>,
}

impl IntegratedLink {
    pub fn new(n: NewIntegratedLink) -> Self {
        Self {
            common: n.common,
            db: n.db,
            admin_password: Some(n.admin_password),
            ssh: n.ssh,
            exec: n.exec,
            ops: None,
            state: LinkState::Connecting,
            opening: false,
            last_error: None,
        }
    }

    fn start_open(&mut self, ctx: &mut Context<Self>) {
        if self.opening {
            return;
        }
        let Some(password) = self.admin_password.clone() else {
            return;
        };
        self.opening = true;
        let db = self.db.clone();
        // Argon2id and SQLite are blocking work: off the async threads.
        let open = async move {
            crate::password::hashing(move || Inventory::open(&db, &password))
                .await
                .map_err(|e| InventoryError::Invalid(e.to_string()))?
        };
        ctx.spawn(open.into_actor(self).map(|result, act, ctx| {
            act.opening = false;
            act.on_open(result, ctx);
        }));
    }

    fn on_open(&mut self, result: Result<Inventory, InventoryError>, ctx: &mut Context<Self>) {
        match result {
            Ok(inventory) => {
                self.admin_password = None;
                let name = self
                    .db
                    .file_stem()
                    .map(|s| format!("integrated:{}", s.to_string_lossy()))
                    .unwrap_or_else(|| "integrated".into());
                let ops = ServiceOps::with_limits(
                    name,
                    inventory,
                    Drivers::new(self.ssh.clone()),
                    self.exec.clone(),
                );
                let principal = Arc::new(ServiceOps::owner());
                self.common.publish(Some(LinkChannel::Local {
                    ops: ops.clone(),
                    principal: principal.clone(),
                }));
                self.ops = Some((ops, principal));
                self.state = LinkState::Up;
                metrics::counter!("switchyard_link_connects_total", "transport" => Transport::Integrated.as_str())
                    .increment(1);
                info!(link = self.common.id, db = %self.db.display(), "integrated service up");
                answer_waiters(self, ctx);
            }
            Err(e) => {
                let code = match e {
                    InventoryError::WrongAdminPassword(_) => ErrorCode::Unauthenticated,
                    InventoryError::NotFound(_) | InventoryError::NotInitialized(_) => {
                        ErrorCode::NotFound
                    }
                    _ => ErrorCode::Internal,
                };
                let error = LinkError::Rejected {
                    target: self.common.key.target.clone(),
                    error: WireError::new(code, e.to_string()),
                };
                warn!(link = self.common.id, error = %error, "integrated service failed to open");
                self.common.fail_waiters(&error);
                self.last_error = Some(error);
                self.state = LinkState::Failed;
                if self.common.holders == 0 {
                    stop_and_report(self, ctx);
                }
            }
        }
    }
}

impl LinkActor for IntegratedLink {
    fn common(&mut self) -> &mut LinkCommon {
        &mut self.common
    }

    fn acquired(&mut self, hold: bool, ctx: &mut Context<Self>) -> Option<Acquired> {
        let (ops, principal) = self.ops.clone()?;
        if hold {
            self.common.hold(ctx);
        }
        Some(Acquired {
            service_name: ops.name().to_string(),
            channel: LinkChannel::Local { ops, principal },
            in_flight: self.common.in_flight_guard(),
            fingerprint: None,
        })
    }
}

impl Actor for IntegratedLink {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.common.on_stopped();
        info!(link = self.common.id, db = %self.db.display(), "integrated service closed");
    }
}

impl Handler<Acquire> for IntegratedLink {
    type Result = ResponseFuture<Result<Acquired, LinkError>>;

    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) -> Self::Result {
        if let Some(acquired) = self.acquired(msg.hold, ctx) {
            return Box::pin(std::future::ready(Ok(acquired)));
        }
        if self.state == LinkState::Connecting {
            let answer = self.common.wait(msg.hold);
            self.start_open(ctx);
            return answer;
        }
        let error = self
            .last_error
            .clone()
            .unwrap_or_else(|| LinkError::Closed("the integrated service is closed".into()));
        Box::pin(std::future::ready(Err(error)))
    }
}

impl Handler<Release> for IntegratedLink {
    type Result = ();

    fn handle(&mut self, _: Release, ctx: &mut Self::Context) {
        let up = self.state == LinkState::Up;
        release(self, ctx, up);
    }
}

impl Handler<Hold> for IntegratedLink {
    type Result = ();

    fn handle(&mut self, _: Hold, ctx: &mut Self::Context) {
        self.common.hold(ctx);
    }
}

impl Handler<LinkStatus> for IntegratedLink {
    type Result = MessageResult<LinkStatus>;

    fn handle(&mut self, _: LinkStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(LinkInfo {
            id: self.common.id,
            key: self.common.key.clone(),
            transport: Transport::Integrated,
            state: self.state,
            holders: self.common.holders,
            in_flight: self.common.in_flight.load(Ordering::Relaxed),
            connects: u64::from(self.ops.is_some()),
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            fingerprint: None,
            carrier: String::new(),
        })
    }
}

impl Handler<CloseLink> for IntegratedLink {
    type Result = ();

    fn handle(&mut self, _: CloseLink, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
