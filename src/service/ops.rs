//! Service operations, independent of any transport.
//!
//! Owns: the service's inventory connection and its device drivers. The
//! RPC socket and the broker's integrated mode both call [`ServiceOps`], so
//! a request behaves the same however it arrived.
//!
//! Takes: `authenticate` (user + password → [`Principal`]) and `handle`
//! (one request → [`Response`] events on a bounded channel).
//!
//! On failure: a request that cannot run at all (over a cap of
//! [`ExecLimits`], no commands) gets one `Response::Error`; a device that
//! fails — unknown, outside the caller's scope, unreachable — gets an
//! `ExecDevice` carrying its error while the other devices go on. Unknown
//! and forbidden devices get the same answer ("no device NAME that you may
//! use"), so a remote user cannot learn which devices exist beyond their
//! scope. When the caller goes away (its receiver is dropped) the work stops
//! at the next event.
//!
//! Exec fan-out: a device named several times in one request runs once and
//! is reported once, under the index of its first occurrence; each device's
//! driver work holds one of the service's device slots. Output streams: each
//! device's driver writes into an `OutputSink` that sends `ExecOutput`
//! chunks on `out` as they arrive (a slow caller makes it wait), then the
//! device's `ExecDevice`. Standard input (`ExecWith` with `stdin`) goes to
//! the one command of a one-device request; any other shape is refused.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::drivers::ssh_subsystem::SubsystemError;
use super::drivers::ssh_transfer::TransferError;
use super::drivers::{
    DeviceProfile, DeviceRun, DeviceTarget, DriverError, Drivers, ExecOptions, OutputSink,
};
use super::exec_limits::{ExecLimits, LimitError};
use super::inventory::{DeviceScope, Inventory, InventoryError, LoginRecord};
use crate::secret::Secret;
use crate::wire::assertion::AssertionVerifier;
use crate::wire::messages::{
    CommandDone, DeviceInfo, ErrorCode, ExecFlags, Request, RequestEnvelope, Response, ShellReset,
    TerminalInput, WireError,
};

pub use super::drivers::output::{INLINE_BUDGET, OUTPUT_CHUNK};

/// An authenticated remote user.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub scope: DeviceScope,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("wrong user name or password")]
    Unauthenticated,
    #[error("the relay's assertion was refused: {0}")]
    BadAssertion(String),
    #[error("cloud identity {0} is not a remote user of this service")]
    NotRemoteUser(String),
    /// The device does not exist, or the caller's scope does not include
    /// it: one answer for both, so the scope hides what lies beyond it.
    #[error("no device {0:?} that you may use")]
    NoDevice(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The request asks for something that cannot be done as asked.
    #[error("{0}")]
    BadRequest(String),
    #[error("the request's deadline passed")]
    DeadlineExceeded,
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A file transfer failed (device and path named).
    #[error(transparent)]
    Transfer(TransferError),
    /// An SSH subsystem could not be started (device and name named).
    #[error(transparent)]
    Subsystem(SubsystemError),
}

impl From<SubsystemError> for OpsError {
    fn from(e: SubsystemError) -> Self {
        match e {
            SubsystemError::Driver(d) => Self::Driver(d),
            other => Self::Subsystem(other),
        }
    }
}

impl From<TransferError> for OpsError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Driver(d) => Self::Driver(d),
            other => Self::Transfer(other),
        }
    }
}

impl OpsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated | Self::BadAssertion(_) => ErrorCode::Unauthenticated,
            Self::NotRemoteUser(_) => ErrorCode::PermissionDenied,
            Self::NoDevice(_) => ErrorCode::NotFound,
            Self::Limit(e) => e.code(),
            Self::BadRequest(_) => ErrorCode::InvalidArgument,
            Self::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            Self::Driver(DriverError::ConnectTimeout { .. } | DriverError::JumpSlow { .. }) => {
                ErrorCode::DeadlineExceeded
            }
            Self::Driver(DriverError::Busy { .. }) => ErrorCode::ResourceExhausted,
            // The jump host's policy forbids the channel (not a failure to
            // connect): a refusal like a port outside `forward_ports`.
            Self::Driver(DriverError::JumpRefused {
                by_policy: true, ..
            }) => ErrorCode::PermissionDenied,
            Self::Driver(_) => ErrorCode::Unavailable,
            Self::Inventory(_) | Self::Internal(_) => ErrorCode::Internal,
            Self::Transfer(e) => e.code().unwrap_or(ErrorCode::Unavailable),
            Self::Subsystem(e) => match e {
                SubsystemError::BadName { .. }
                | SubsystemError::Simulated { .. }
                | SubsystemError::Telnet { .. } => ErrorCode::InvalidArgument,
                SubsystemError::Stalled { .. } => ErrorCode::DeadlineExceeded,
                SubsystemError::Refused { .. } | SubsystemError::Driver(_) => {
                    ErrorCode::Unavailable
                }
            },
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }
}

/// The service's operations over one inventory.
pub struct ServiceOps {
    name: String,
    // rusqlite connections are not Sync. Every hold is one short query; the
    // slow parts (password hashing, device I/O) run outside the lock.
    inventory: Mutex<Inventory>,
    drivers: Drivers,
    limits: ExecLimits,
    /// Set when the service is enrolled with a relay: how to check the
    /// relay's assertions about cloud callers.
    cloud: Option<CloudTrust>,
}

/// What an enrolled service trusts the relay to say.
struct CloudTrust {
    serial: String,
    verifier: AssertionVerifier,
}

impl std::fmt::Debug for ServiceOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOps")
            .field("name", &self.name)
            .finish()
    }
}

impl ServiceOps {
    /// Operations with the default [`ExecLimits`] (slots of their own).
    pub fn new(name: impl Into<String>, inventory: Inventory, drivers: Drivers) -> Arc<Self> {
        Self::with_limits(name, inventory, drivers, ExecLimits::default())
    }

    /// Operations under `limits`; clones of one `ExecLimits` share their
    /// device slots, so several inventories can share one bound.
    pub fn with_limits(
        name: impl Into<String>,
        inventory: Inventory,
        drivers: Drivers,
        limits: ExecLimits,
    ) -> Arc<Self> {
        // A locked inventory cannot read its enrollment; then it simply
        // accepts no cloud callers.
        let cloud = inventory
            .relay_enrollment()
            .ok()
            .flatten()
            .map(|e| CloudTrust {
                verifier: AssertionVerifier::new(e.issuer.clone(), &e.assertion_key),
                serial: e.serial,
            });
        Arc::new(Self {
            name: name.into(),
            inventory: Mutex::new(inventory),
            drivers,
            limits,
            cloud,
        })
    }

    /// The serial this service enrolled with a relay as, if any.
    pub fn serial(&self) -> Option<&str> {
        self.cloud.as_ref().map(|c| c.serial.as_str())
    }

    /// Checks a relay-signed assertion and that its identity is one of
    /// this service's cloud remote users.
    pub fn authenticate_assertion(&self, assertion: &str) -> Result<Principal, OpsError> {
        let cloud = self.cloud.as_ref().ok_or_else(|| {
            OpsError::BadAssertion("this service is not enrolled with a relay".into())
        })?;
        let claims = cloud
            .verifier
            .verify(assertion, &cloud.serial)
            .map_err(|e| OpsError::BadAssertion(e.to_string()))?;
        let user = self
            .inventory()
            .cloud_user(&claims.sub)?
            .ok_or(OpsError::NotRemoteUser(claims.sub))?;
        Ok(Principal {
            user: user.name,
            scope: user.devices,
        })
    }

    /// The name the service gives itself in greetings and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn drivers(&self) -> &Drivers {
        &self.drivers
    }

    pub fn limits(&self) -> &ExecLimits {
        &self.limits
    }

    pub(super) fn inventory(&self) -> MutexGuard<'_, Inventory> {
        self.inventory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a remote user's password (Argon2id, off the async threads).
    pub async fn authenticate(
        &self,
        username: &str,
        password: Secret,
    ) -> Result<Principal, OpsError> {
        let record = self.inventory().login_record(username)?;
        let user = crate::password::hashing(move || LoginRecord::verify(record, &password))
            .await
            .map_err(|e| OpsError::Internal(e.to_string()))?;
        user.map(|u| Principal {
            user: u.name,
            scope: u.devices,
        })
        .ok_or(OpsError::Unauthenticated)
    }

    /// A principal for the inventory's owner (integrated mode, where the
    /// admin password already proved who the caller is).
    pub fn owner() -> Principal {
        Principal {
            user: "admin".into(),
            scope: DeviceScope::all(),
        }
    }

    /// Runs one request, sending its responses to `out`. `input` carries a
    /// terminal's keystrokes; other requests ignore it.
    pub async fn handle(
        &self,
        principal: &Principal,
        envelope: RequestEnvelope,
        input: mpsc::Receiver<TerminalInput>,
        out: mpsc::Sender<Response>,
    ) {
        metrics::counter!("switchyard_service_requests_total", "kind" => envelope.request.kind())
            .increment(1);
        let deadline = envelope.deadline_ms.map(Duration::from_millis);
        let work = self.dispatch(principal, envelope.request, deadline, input, &out);
        let result = match deadline {
            Some(d) => tokio::time::timeout(d, work)
                .await
                .unwrap_or(Err(OpsError::DeadlineExceeded)),
            None => work.await,
        };
        if let Err(e) = result {
            debug!(user = %principal.user, error = %e, "request failed");
            let _ = out.send(Response::Error(e.to_wire())).await;
        }
    }

    async fn dispatch(
        &self,
        principal: &Principal,
        request: Request,
        deadline: Option<Duration>,
        input: mpsc::Receiver<TerminalInput>,
        out: &mpsc::Sender<Response>,
    ) -> Result<(), OpsError> {
        match request {
            Request::Ping => {
                let _ = out.send(Response::Pong).await;
                Ok(())
            }
            Request::Inventory => {
                let devices = self.inventory_for(principal)?;
                let _ = out.send(Response::Inventory(devices)).await;
                Ok(())
            }
            Request::Exec {
                devices,
                commands,
                timeout_ms,
            } => {
                let flags = ExecFlags::default();
                let timeout = exec_timeout(timeout_ms, deadline);
                let reset = ShellReset::default();
                self.exec(
                    principal, &devices, &commands, timeout, flags, reset, None, out,
                )
                .await
            }
            Request::ExecWith {
                devices,
                commands,
                timeout_ms,
                flags,
            } => {
                let timeout = exec_timeout(timeout_ms, deadline);
                let stdin = flags.stdin.then_some(input);
                let reset = ShellReset::default();
                self.exec(
                    principal, &devices, &commands, timeout, flags, reset, stdin, out,
                )
                .await
            }
            Request::ExecReset {
                devices,
                commands,
                timeout_ms,
                flags,
                reset,
            } => {
                let timeout = exec_timeout(timeout_ms, deadline);
                let stdin = flags.stdin.then_some(input);
                self.exec(
                    principal, &devices, &commands, timeout, flags, reset, stdin, out,
                )
                .await
            }
            Request::Terminal { device, cols, rows } => {
                self.terminal(principal, &device, cols, rows, input, out)
                    .await
            }
            // A byte stream, not events: `forward::serve` or `open_forward`.
            Request::Forward { .. } | Request::Subsystem { .. } => Err(OpsError::Internal(
                "a raw stream is served by `service::forward`/`subsystem`, not as events".into(),
            )),
            Request::FileGet {
                device,
                path,
                protocol,
                max_bytes,
            } => {
                let copy = super::transfer::Copy {
                    device: &device,
                    path: &path,
                    protocol,
                };
                self.file_get(principal, copy, max_bytes, out).await
            }
            Request::FilePut {
                device,
                path,
                protocol,
                size,
                mode,
            } => {
                let copy = super::transfer::Copy {
                    device: &device,
                    path: &path,
                    protocol,
                };
                self.file_put(principal, copy, size, mode, input, out).await
            }
        }
    }

    /// The devices `principal` may reach.
    pub fn inventory_for(&self, principal: &Principal) -> Result<Vec<DeviceInfo>, OpsError> {
        Ok(self
            .inventory()
            .devices()?
            .into_iter()
            .filter(|d| principal.scope.allows(&d.name))
            .map(|d| DeviceInfo {
                name: d.name,
                host: d.host,
                port: d.port,
                device_type: d.device_type,
                attributes: d.attributes,
            })
            .collect())
    }

    /// Looks a device up and unseals its credentials, checking the scope
    /// first: a device outside it is not even looked up.
    pub(super) fn resolve(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<DeviceTarget, OpsError> {
        if !principal.scope.allows(name) {
            return Err(OpsError::NoDevice(name.to_string()));
        }
        self.target(name, &[]).map_err(|e| match e {
            OpsError::Inventory(InventoryError::UnknownDevice(n)) => OpsError::NoDevice(n),
            other => other,
        })
    }

    /// Device `name` and, through its `jump_host`, the chain of devices it
    /// is reached through (`via`: the devices before it on the chain,
    /// nearest last; the inventory keeps chains acyclic and short, this
    /// check guards a database written by an older version or by hand,
    /// and says which setting to clear). A jump device needs no scope of
    /// its own: it is the path, not the target.
    pub(super) fn target(&self, name: &str, via: &[&str]) -> Result<DeviceTarget, OpsError> {
        let (device, credentials) = self.inventory().device_with_credentials(name)?;
        let jump = match &device.jump_host {
            Some(jump) => {
                let mut chain = via.to_vec();
                chain.push(name);
                let problem = if chain.contains(&jump.as_str()) {
                    Some("form a cycle".to_string())
                } else if chain.len() > crate::service::inventory::MAX_JUMPS {
                    Some(format!(
                        "form too long a chain (at most {} jump hosts)",
                        crate::service::inventory::MAX_JUMPS
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(OpsError::Inventory(InventoryError::Invalid(format!(
                        "the jump hosts of {start} {problem}: {path} -> {jump}; \
                         fix it with `switchyard service device set {name} --jump-host none` \
                         (or another jump host)",
                        start = chain[0],
                        path = chain.join(" -> "),
                    ))));
                }
                Some(Box::new(self.target(jump, &chain)?))
            }
            None => None,
        };
        Ok(DeviceTarget {
            credentials,
            name: device.name,
            host: device.host,
            port: device.port,
            driver: device.driver,
            known_host_key: device.host_key,
            legacy_algorithms: device.legacy_algorithms,
            profile: DeviceProfile::new(&device.device_type, device.session),
            jump,
        })
    }

    pub(super) fn record_host_key(&self, device: &str, key: &str) {
        if let Err(e) = self.inventory().record_host_key(device, key) {
            warn!(device, error = %e, "cannot record the device's host key");
        }
    }

    /// Records the host keys a call met for the first time: the target's
    /// (`learned`) and those of the jump hosts it went through, which the
    /// SSH pool keeps until asked.
    pub(super) fn record_learned(&self, target: &DeviceTarget, learned: Option<&str>) {
        if let Some(key) = learned {
            self.record_host_key(&target.name, key);
        }
        self.record_jump_keys(target.jump.as_deref());
    }

    /// Records the host keys first seen on the connections to `jump` and
    /// the jump hosts it is reached through (kept by the SSH pool until
    /// asked: a `direct-tcpip` channel reports none to its caller).
    pub(super) fn record_jump_keys(&self, jump: Option<&DeviceTarget>) {
        let mut jump = jump;
        while let Some(hop) = jump {
            if hop.known_host_key.is_none()
                && let Some(key) = self.drivers.take_host_key(&hop.name)
            {
                self.record_host_key(&hop.name, &key);
            }
            jump = hop.jump.as_deref();
        }
    }

    /// Runs `commands` on each distinct device of `devices` at once, each
    /// device in one of the service's slots; output streams as it comes,
    /// and each device is reported as it ends. `stdin` (one device and one
    /// command only) feeds the command; `reset` asks shell devices for
    /// fresh shells ([`ShellReset`]).
    #[allow(clippy::too_many_arguments)]
    async fn exec(
        &self,
        principal: &Principal,
        devices: &[String],
        commands: &[String],
        timeout: Option<Duration>,
        flags: ExecFlags,
        reset: ShellReset,
        stdin: Option<mpsc::Receiver<TerminalInput>>,
        out: &mpsc::Sender<Response>,
    ) -> Result<(), OpsError> {
        let distinct = self.limits.check(devices, commands)?;
        if stdin.is_some() && (distinct.len() != 1 || commands.len() != 1) {
            return Err(OpsError::BadRequest(format!(
                "standard input can go to one command on one device; this request has {} \
                 device(s) and {} command(s)",
                distinct.len(),
                commands.len()
            )));
        }
        let cap = flags
            .max_output_bytes
            .filter(|n| *n > 0)
            .or(self.drivers.default_output_cap());
        // Declared before `running`, so it drops after it: by then this
        // request's slots are free.
        let _done = RequestDone(&self.limits);
        let mut stdin = stdin;
        let mut running: FuturesUnordered<_> = distinct
            .into_iter()
            .map(|(index, name)| {
                let sink = OutputSink::new(out.clone(), index, cap).with_commands(commands.len());
                let options = ExecOptions {
                    timeout,
                    stdin: stdin.take(),
                    reset,
                };
                async move {
                    let result = self
                        .exec_device(principal, name, commands, options, sink)
                        .await;
                    (index, result)
                }
            })
            .collect();
        while let Some((index, result)) = running.next().await {
            if out.send(exec_response(index, result)).await.is_err() {
                return Ok(()); // the caller went away; dropping `running` cancels the rest
            }
        }
        Ok(())
    }

    /// One device of an exec: looked up, then run once a slot is free, its
    /// output going to `sink`.
    async fn exec_device(
        &self,
        principal: &Principal,
        name: &str,
        commands: &[String],
        options: ExecOptions,
        mut sink: OutputSink,
    ) -> Result<DeviceRun, OpsError> {
        let target = self.resolve(principal, name)?;
        let slot = self.limits.slot().await;
        let run = self
            .drivers
            .run(&target, commands, options, &mut sink)
            .await?;
        self.record_learned(&target, run.learned_host_key.as_deref());
        slot.record_output(run.output_bytes.min(usize::MAX as u64) as usize);
        Ok(run)
    }

    async fn terminal(
        &self,
        principal: &Principal,
        device: &str,
        cols: u16,
        rows: u16,
        mut input: mpsc::Receiver<TerminalInput>,
        out: &mpsc::Sender<Response>,
    ) -> Result<(), OpsError> {
        let target = self.resolve(principal, device)?;
        let (mut terminal, learned) = self.drivers.terminal(&target, cols, rows).await?;
        self.record_learned(&target, learned.as_deref());
        if out.send(Response::TerminalReady).await.is_err() {
            return Ok(());
        }
        let mut input_open = true;
        loop {
            tokio::select! {
                keys = input.recv(), if input_open => match keys {
                    Some(keys) => {
                        if terminal.input.send(keys).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        input_open = false;
                        terminal.close_input();
                    }
                },
                screen = terminal.output.recv() => match screen {
                    Some(bytes) => {
                        if out.send(Response::TerminalOutput(bytes)).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = out.send(Response::TerminalClosed).await;
        Ok(())
    }
}

/// Tells the limits a request is over when it ends or is dropped.
struct RequestDone<'a>(&'a ExecLimits);

impl Drop for RequestDone<'_> {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// The timeout of each command: the caller's, bounded by its deadline.
fn exec_timeout(timeout_ms: Option<u64>, deadline: Option<Duration>) -> Option<Duration> {
    match (timeout_ms.map(Duration::from_millis), deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    }
}

/// One device's end as a protocol event: its commands' statuses and the
/// output tails that ride inline (the rest was streamed before), or its
/// failure.
pub fn exec_response(device: u32, result: Result<DeviceRun, OpsError>) -> Response {
    let run = match result {
        Ok(run) => run,
        Err(e) => {
            return Response::ExecDevice {
                device,
                commands: Vec::new(),
                error: Some(e.to_wire()),
            };
        }
    };
    let commands = run
        .results
        .into_iter()
        .enumerate()
        .map(|(index, r)| CommandDone {
            command: index as u32,
            output: r.tail.stdout,
            stderr: r.tail.stderr,
            exit_status: r.exit_status,
            duration_us: r.duration.as_micros().min(u64::MAX as u128) as u64,
            error: r.error.map(|e| e.to_string()),
        })
        .collect();
    Response::ExecDevice {
        device,
        commands,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::drivers::{CommandError, CommandRun, Tail};

    #[test]
    fn a_device_ends_with_its_tails_statuses_and_errors_in_one_frame() {
        let run = DeviceRun {
            results: vec![
                CommandRun {
                    command: "a".into(),
                    duration: Duration::from_millis(1),
                    exit_status: Some(3),
                    error: None,
                    tail: Tail {
                        stdout: b"out\xff".to_vec(),
                        stderr: b"err".to_vec(),
                    },
                },
                CommandRun {
                    command: "b".into(),
                    duration: Duration::from_millis(1),
                    exit_status: None,
                    error: Some(CommandError::TimedOut(Duration::from_secs(1))),
                    tail: Tail::default(),
                },
            ],
            learned_host_key: None,
            output_bytes: 7,
        };
        let Response::ExecDevice {
            device, commands, ..
        } = exec_response(4, Ok(run))
        else {
            panic!("a device result")
        };
        assert_eq!(device, 4);
        assert_eq!(commands[0].output, b"out\xff");
        assert_eq!(commands[0].stderr, b"err");
        assert_eq!(commands[0].exit_status, Some(3));
        assert_eq!(commands[1].command, 1);
        assert!(commands[1].error.as_deref().unwrap().contains("timed out"));
    }
}
