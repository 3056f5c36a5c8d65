//! Conversions between protobuf messages and domain types, and error
//! mapping to gRPC status codes.

use std::time::Duration;

use tonic::Status;

use super::pb;
use crate::broker::error::BrokerError;
use crate::broker::link::LinkError;
use crate::broker::login_registry::LoginListing;
use crate::broker::registry::StatusInfo;
use crate::broker::routes::ServiceRef;
use crate::broker::session::SessionEvent;
use crate::wire::messages::{DeviceInfo, ErrorCode, Response};

/// The gRPC status for an error category.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let message = message.into();
    match code {
        ErrorCode::InvalidArgument => Status::invalid_argument(message),
        ErrorCode::Unauthenticated => Status::unauthenticated(message),
        ErrorCode::PermissionDenied => Status::permission_denied(message),
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::ResourceExhausted => Status::resource_exhausted(message),
        ErrorCode::Unavailable => Status::unavailable(message),
        ErrorCode::DeadlineExceeded => Status::deadline_exceeded(message),
        ErrorCode::Cancelled => Status::cancelled(message),
        ErrorCode::Internal => Status::internal(message),
    }
}

/// The gRPC code name, for events that carry an error inside a stream.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
        ErrorCode::Unauthenticated => "UNAUTHENTICATED",
        ErrorCode::PermissionDenied => "PERMISSION_DENIED",
        ErrorCode::NotFound => "NOT_FOUND",
        ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
        ErrorCode::Unavailable => "UNAVAILABLE",
        ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
        ErrorCode::Cancelled => "CANCELLED",
        ErrorCode::Internal => "INTERNAL",
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        status(e.code(), e.to_string())
    }
}

impl From<LinkError> for Status {
    fn from(e: LinkError) -> Self {
        status(e.code(), e.to_string())
    }
}

/// Reads a `ServiceRef` message.
pub fn service_ref(r: Option<pb::ServiceRef>) -> Result<ServiceRef, Status> {
    let r = r.ok_or_else(|| {
        Status::invalid_argument("name the service (session_id + service_id, or name)")
    })?;
    match (
        r.session_id.is_empty(),
        r.service_id.is_empty(),
        r.name.is_empty(),
    ) {
        (false, false, true) => Ok(ServiceRef::InSession {
            session_id: r.session_id,
            service_id: r.service_id,
        }),
        (true, true, false) => Ok(ServiceRef::Named(r.name)),
        _ => Err(Status::invalid_argument(
            "name the service either by session_id + service_id or by name",
        )),
    }
}

pub fn device(d: DeviceInfo) -> pb::Device {
    pb::Device {
        name: d.name,
        host: d.host,
        port: d.port.into(),
        device_type: d.device_type,
        attributes: d.attributes.into_iter().collect(),
    }
}

/// An exec response as a gRPC event (`None` for responses exec never sends).
pub fn exec_event(r: Response) -> Option<pb::ExecEvent> {
    use pb::exec_event::Event;
    let (device, event) = match r {
        Response::ExecOutput {
            device,
            command,
            stderr,
            data,
        } => (
            device,
            Event::Output(pb::CommandOutput {
                command,
                data,
                stderr,
            }),
        ),
        Response::ExecDevice {
            device,
            commands,
            error,
        } => (
            device,
            Event::DeviceResult(pb::DeviceResult {
                commands: commands
                    .into_iter()
                    .map(|c| pb::CommandResult {
                        command: c.command,
                        output: c.output,
                        exit_status: c.exit_status,
                        duration_us: c.duration_us,
                        error: c.error.unwrap_or_default(),
                        stderr: c.stderr,
                    })
                    .collect(),
                error_code: error
                    .as_ref()
                    .map(|e| code_name(e.code).to_string())
                    .unwrap_or_default(),
                error: error.map(|e| e.message).unwrap_or_default(),
            }),
        ),
        _ => return None,
    };
    Some(pb::ExecEvent {
        device,
        event: Some(event),
    })
}

/// Counts devices as their results pass, for an exec's closing summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecTally {
    pub succeeded: u32,
    pub failed: u32,
}

impl ExecTally {
    /// Counts `event` if it is a device's result: succeeded when the device
    /// ran and every command ended without error and with exit status 0
    /// (or none reported).
    pub fn count(&mut self, event: &pb::ExecEvent) {
        if let Some(pb::exec_event::Event::DeviceResult(r)) = &event.event {
            let ok = r.error.is_empty()
                && r.commands
                    .iter()
                    .all(|c| c.error.is_empty() && c.exit_status.unwrap_or(0) == 0);
            if ok {
                self.succeeded += 1;
            } else {
                self.failed += 1;
            }
        }
    }

    /// SUCCESS when no device failed, FAILURE when none succeeded (or
    /// none ran), PARTIAL_SUCCESS otherwise.
    pub fn status(&self) -> pb::ExecStatus {
        match (self.succeeded, self.failed) {
            (_, 0) if self.succeeded > 0 => pb::ExecStatus::Success,
            (0, _) => pb::ExecStatus::Failure,
            _ => pb::ExecStatus::PartialSuccess,
        }
    }

    /// The closing event of an exec call.
    pub fn summary(&self, elapsed: std::time::Duration) -> pb::ExecEvent {
        pb::ExecEvent {
            device: 0,
            event: Some(pb::exec_event::Event::Summary(pb::ExecSummary {
                status: self.status().into(),
                succeeded: self.succeeded,
                failed: self.failed,
                elapsed_us: elapsed.as_micros().min(u64::MAX as u128) as u64,
            })),
        }
    }
}

/// A terminal response as a gRPC event.
pub fn terminal_event(r: Response) -> Option<pb::TerminalEvent> {
    use pb::terminal_event::Event;
    let event = match r {
        Response::TerminalReady => Event::Ready(pb::TerminalReady {}),
        Response::TerminalOutput(data) => Event::Data(data),
        Response::TerminalClosed => Event::Closed(pb::TerminalClosed {}),
        _ => return None,
    };
    Some(pb::TerminalEvent { event: Some(event) })
}

pub fn session_event(e: SessionEvent) -> pb::SessionEvent {
    use pb::session_event::Event;
    pb::SessionEvent {
        event: Some(match e {
            SessionEvent::Attached { session_id } => Event::Attached(pb::Attached { session_id }),
            SessionEvent::ShuttingDown { reason } => {
                Event::ShuttingDown(pb::ShuttingDown { reason })
            }
        }),
    }
}

pub fn status_response(s: StatusInfo, logins: Vec<LoginListing>) -> pb::StatusResponse {
    pb::StatusResponse {
        sessions: s
            .sessions
            .into_iter()
            .map(|x| pb::SessionStatus {
                session_id: x.session_id,
                client_name: x.client_name,
                pid: x.pid.unwrap_or(0),
                services: x.services,
                in_flight: x.in_flight,
            })
            .collect(),
        named_services: s
            .named
            .into_iter()
            .map(|n| pb::NamedServiceStatus {
                name: n.name,
                link_id: format!("L{}", n.link),
                idle_secs: n.idle.as_secs(),
            })
            .collect(),
        links: s
            .links
            .into_iter()
            .map(|l| pb::LinkStatus {
                link_id: format!("L{}", l.id),
                target: l.key.target,
                principal: l.key.username,
                transport: l.transport.as_str().to_string(),
                state: l.state.as_str().to_string(),
                holders: l.holders,
                in_flight: l.in_flight,
                connects: l.connects,
                last_error: l.last_error.unwrap_or_default(),
                fingerprint: l.fingerprint.map(|f| f.to_string()).unwrap_or_default(),
                carrier: l.carrier,
            })
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        logins: logins
            .into_iter()
            .map(|l| pb::LoginStatus {
                identity: l.summary.key.identity,
                relay_url: l.summary.key.relay,
                method: l.summary.key.method.as_str().into(),
                state: l.summary.state.into(),
                expires_unix: l.summary.expires.unwrap_or(0),
                sessions: l.sessions,
                connected: l.summary.connected,
                reach: l.summary.reach.as_str().into(),
                last_error: match &l.summary.reach {
                    crate::broker::cloud_login::Reach::Failing(e) => e.clone(),
                    _ => String::new(),
                },
                carrier: l.summary.carrier,
            })
            .collect(),
        // Filled in by the front door from its forwards table.
        forwards: Vec::new(),
        // Filled in by the front door from its SSH proxies.
        ssh_proxy: None,
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of
/// H M S m u n).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    // `split_at_checked`: a multi-byte last character is no unit (and
    // must not panic; found by the broker_api fuzz target).
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's deadline, if it set one.
pub fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("123456789S"), None);
        assert_eq!(grpc_timeout("5x"), None);
        assert_eq!(grpc_timeout(""), None);
        assert_eq!(grpc_timeout("30S\u{d6db}"), None);
    }

    #[test]
    fn errors_map_to_grpc_codes() {
        let s: Status = BrokerError::NotFound("no device".into()).into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        let s: Status = LinkError::Lost {
            target: "svc:8181".into(),
            reason: "reset".into(),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("svc:8181"));
    }
}
