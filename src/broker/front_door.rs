//! The front door: the broker's gRPC API on a Unix socket.
//!
//! Owns: nothing long-lived — each handler turns one gRPC call into
//! messages to the registry and links, and a call on a link. Response
//! streams *are* the calls (no task per call): when the caller goes away,
//! tonic drops the stream and with it the call, which stops the service's
//! work too.
//!
//! **Invariant:** the caller's identity comes only from `SO_PEERCRED`; a
//! connection without peer credentials is refused.

use std::pin::Pin;

use actix::Addr;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

mod cloud;
mod exec;
mod forward;
mod ssh_proxy;
mod transfer;

use super::error::BrokerError;
use super::link::CallStream;
use super::link_actor::InFlight;
use super::login_registry::{ListLogins, LoginRegistry};
use super::peer::{ConnectedPeer, Peer};
use super::registry::{
    Disconnect, ForgetKnownService, GetSession, ListKnownServices, OpenSession, ServiceDirect,
    ServiceInfo, ServiceIntegrated, SessionRegistry, Status as StatusMsg,
};
use super::routes::{Routes, ServiceRef};
use super::session::{AttachSession, EndSession, Session};
use crate::api::convert;
use crate::api::pb::{self, broker_server::Broker};
use crate::secret::Secret;
use crate::wire::messages::{
    Request as WireRequest, RequestEnvelope, Response as WireResponse, TerminalInput,
};
use crate::wire::pin::Fingerprint;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers a server-streaming call once its first event is there, so the
/// response headers leave in the same write as that event: one wake-up of
/// the caller instead of two. A call that fails before any event ends with
/// a plain error status.
async fn answer_with_first<T: Send + 'static>(
    mut events: EventStream<T>,
) -> Result<Response<EventStream<T>>, Status> {
    match events.next().await {
        None => Ok(Response::new(Box::pin(futures::stream::empty()))),
        Some(Err(status)) => Err(status),
        Some(Ok(first)) => Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(first) }).chain(events),
        ))),
    }
}

/// The gRPC service implementation.
#[derive(Clone)]
pub struct FrontDoor {
    registry: Addr<SessionRegistry>,
    logins: Addr<LoginRegistry>,
    routes: tokio::sync::watch::Receiver<std::sync::Arc<Routes>>,
    /// Set at shutdown: new calls are refused while running ones finish.
    draining: CancellationToken,
    /// Calls running now, across all sessions (drained at shutdown).
    in_flight: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Port forwards (`ForwardStart`).
    forwards: std::sync::Arc<super::forward::Forwards>,
    /// SSH proxies (`SshProxyStart`).
    ssh_proxies: std::sync::Arc<super::ssh_proxy::SshProxies>,
}

impl FrontDoor {
    pub fn new(
        registry: Addr<SessionRegistry>,
        logins: Addr<LoginRegistry>,
        routes: tokio::sync::watch::Receiver<std::sync::Arc<Routes>>,
        draining: CancellationToken,
        in_flight: std::sync::Arc<std::sync::atomic::AtomicU32>,
        forwards: std::sync::Arc<super::forward::Forwards>,
        ssh_proxies: std::sync::Arc<super::ssh_proxy::SshProxies>,
    ) -> Self {
        Self {
            registry,
            logins,
            routes,
            draining,
            in_flight,
            forwards,
            ssh_proxies,
        }
    }

    /// The caller's session actor.
    async fn session(&self, peer: Peer, session_id: String) -> Result<Addr<Session>, Status> {
        Ok(self
            .registry
            .send(GetSession { peer, session_id })
            .await
            .map_err(mailbox)??)
    }

    fn admit(&self) -> Result<(), Status> {
        if self.draining.is_cancelled() {
            return Err(Status::unavailable(
                "the broker is shutting down; retry once it is back",
            ));
        }
        Ok(())
    }
}

fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    request
        .extensions()
        .get::<ConnectedPeer>()
        .and_then(|connected| connected.0.clone())
        .ok_or_else(|| {
            Status::permission_denied(
                "caller credentials unavailable: connect over the broker's Unix socket",
            )
        })
}

fn mailbox(e: actix::MailboxError) -> Status {
    BrokerError::mailbox(e).into()
}

/// A call in progress with what keeps it accounted for.
struct OpenCall {
    call: CallStream,
    cancel: CancellationToken,
    _in_flight: InFlight,
}

impl FrontDoor {
    async fn open_call(
        &self,
        peer: Peer,
        service: ServiceRef,
        envelope: RequestEnvelope,
    ) -> Result<OpenCall, Status> {
        metrics::counter!("switchyard_requests_total", "kind" => envelope.request.kind())
            .increment(1);
        let opened = self.open_call_inner(peer, service, envelope).await;
        if let Err(status) = &opened {
            count_error(status);
        }
        opened
    }

    async fn open_call_inner(
        &self,
        peer: Peer,
        service: ServiceRef,
        envelope: RequestEnvelope,
    ) -> Result<OpenCall, Status> {
        self.admit()?;
        let resolved = self.routes.borrow().resolve(&peer, &service)?;
        let super::routes::OpenLink {
            channel,
            in_flight,
            cancel,
        } = resolved.open().await?;
        let in_flight = in_flight.also(self.in_flight.clone());
        let call = channel.call(envelope).await?;
        Ok(OpenCall {
            call,
            cancel,
            _in_flight: in_flight,
        })
    }
}

fn service_response(info: ServiceInfo) -> pb::ServiceResponse {
    pb::ServiceResponse {
        service_id: info.service_id.unwrap_or_default(),
        name: info.name.unwrap_or_default(),
        service_name: info.service_name,
        fingerprint: info.fingerprint.map(|f| f.to_string()).unwrap_or_default(),
        reused: info.reused,
    }
}

fn count_error(status: &Status) {
    metrics::counter!("switchyard_request_errors_total", "code" => format!("{:?}", status.code()))
        .increment(1);
}

fn cancelled() -> Status {
    Status::cancelled("the session ended or the broker is shutting down")
}

#[tonic::async_trait]
impl Broker for FrontDoor {
    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let client_name = request.into_inner().client_name;
        let session_id = self
            .registry
            .send(OpenSession { peer, client_name })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(pb::OpenSessionResponse { session_id }))
    }

    type AttachStream = EventStream<pb::SessionEvent>;

    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let session = self.session(peer, request.into_inner().session_id).await?;
        let events = session.send(AttachSession).await.map_err(mailbox)??;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|e| Ok(convert::session_event(e)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let peer = peer(&request)?;
        let session = self.session(peer, request.into_inner().session_id).await?;
        session.send(EndSession).await.map_err(mailbox)?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn service_direct(
        &self,
        request: Request<pb::ServiceDirectRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let fingerprint = match r.fingerprint.as_str() {
            "" => None,
            text => Some(Fingerprint::parse(text).ok_or_else(|| {
                Status::invalid_argument("fingerprint must be 32 bytes of hex (colons allowed)")
            })?),
        };
        let port = match r.port {
            0 => 8181,
            p => u16::try_from(p).map_err(|_| Status::invalid_argument("port must be 1-65535"))?,
        };
        let tcp_port = match r.tcp_port {
            0 => crate::wire::tcp::DEFAULT_PORT,
            p => u16::try_from(p)
                .map_err(|_| Status::invalid_argument("tcp_port must be 1-65535"))?,
        };
        let rpc_url = match r.rpc_url.as_str() {
            "" => None,
            text => Some(
                crate::wire::tcp::RpcUrl::parse(text)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let proxy = match r.proxy_url.as_str() {
            "" => None,
            _ if rpc_url.is_none() => {
                return Err(Status::invalid_argument(
                    "a proxy carries TCP only: give an rpc_url with proxy_url",
                ));
            }
            text => Some(
                crate::proxy::Proxy::parse(
                    text,
                    Some(r.proxy_password.clone())
                        .filter(|p| !p.is_empty())
                        .map(Secret::new),
                )
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let info = self
            .registry
            .send(ServiceDirect {
                peer,
                session_id: Some(r.session_id).filter(|s| !s.is_empty()),
                name: Some(r.name).filter(|s| !s.is_empty()),
                username: r.username,
                host: r.host,
                port,
                password: Some(r.password).filter(|p| !p.is_empty()).map(Secret::new),
                fingerprint,
                rpc_url,
                proxy,
                tcp_port,
            })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(service_response(info)))
    }

    async fn service_integrated(
        &self,
        request: Request<pb::ServiceIntegratedRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        if r.db.is_empty() || r.admin_password.is_empty() {
            return Err(Status::invalid_argument(
                "integrated mode needs the inventory path and its admin password",
            ));
        }
        let info = self
            .registry
            .send(ServiceIntegrated {
                peer,
                session_id: Some(r.session_id).filter(|s| !s.is_empty()),
                name: Some(r.name).filter(|s| !s.is_empty()),
                db: r.db.into(),
                admin_password: Secret::new(r.admin_password),
            })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(service_response(info)))
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let peer = peer(&request)?;
        let name = request.into_inner().name;
        self.registry
            .send(Disconnect { peer, name })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(pb::DisconnectResponse {}))
    }

    async fn inventory(
        &self,
        request: Request<pb::InventoryRequest>,
    ) -> Result<Response<pb::InventoryResponse>, Status> {
        let peer = peer(&request)?;
        let deadline = convert::deadline(request.metadata());
        let service = convert::service_ref(request.into_inner().service)?;
        let envelope = RequestEnvelope {
            deadline_ms: deadline.map(|d| d.as_millis() as u64),
            request: WireRequest::Inventory,
        };
        let mut open = self.open_call(peer, service, envelope).await?;
        let response = tokio::select! {
            _ = open.cancel.cancelled() => return Err(cancelled()),
            r = open.call.next() => r,
        };
        match response {
            Some(Ok(WireResponse::Inventory(devices))) => {
                Ok(Response::new(pb::InventoryResponse {
                    devices: devices.into_iter().map(convert::device).collect(),
                }))
            }
            Some(Err(e)) => Err(e.into()),
            other => Err(Status::internal(format!(
                "unexpected reply to inventory: {other:?}"
            ))),
        }
    }

    type ExecStream = EventStream<pb::ExecEvent>;

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.exec_call(request).await
    }

    type ExecWithInputStream = EventStream<pb::ExecEvent>;

    async fn exec_with_input(
        &self,
        request: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecWithInputStream>, Status> {
        self.exec_with_input_call(request).await
    }

    type FileDownloadStream = EventStream<pb::FileDownloadEvent>;

    async fn file_download(
        &self,
        request: Request<pb::FileDownloadRequest>,
    ) -> Result<Response<Self::FileDownloadStream>, Status> {
        self.file_download_call(request).await
    }

    async fn file_upload(
        &self,
        request: Request<Streaming<pb::FileUploadInput>>,
    ) -> Result<Response<pb::FileTransferResult>, Status> {
        self.file_upload_call(request).await
    }

    type TerminalStream = EventStream<pb::TerminalEvent>;

    async fn terminal(
        &self,
        request: Request<Streaming<pb::TerminalRequest>>,
    ) -> Result<Response<Self::TerminalStream>, Status> {
        let peer = peer(&request)?;
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .and_then(|m| m.input)
            .ok_or_else(|| {
                Status::invalid_argument("the first terminal message must open a device")
            })?;
        let pb::terminal_request::Input::Open(open_req) = first else {
            return Err(Status::invalid_argument(
                "the first terminal message must open a device",
            ));
        };
        let service = convert::service_ref(open_req.service)?;
        let size = open_req
            .size
            .unwrap_or(pb::WindowSize { cols: 80, rows: 24 });
        let envelope = RequestEnvelope {
            deadline_ms: None,
            request: WireRequest::Terminal {
                device: open_req.device,
                cols: size.cols.min(u16::MAX.into()) as u16,
                rows: size.rows.min(u16::MAX.into()) as u16,
            },
        };
        let open = self.open_call(peer, service, envelope).await?;
        let stream = futures::stream::unfold(Some((open, Some(input))), |state| async move {
            let (mut open, mut input) = state?;
            loop {
                tokio::select! {
                    _ = open.cancel.cancelled() => return Some((Err(cancelled()), None)),
                    msg = async { input.as_mut()?.message().await.ok() }, if input.is_some() => {
                        use pb::terminal_request::Input;
                        let sent = match msg.flatten().and_then(|m| m.input) {
                            Some(Input::Data(bytes)) => open.call.send_input(TerminalInput::Data(bytes)).await,
                            Some(Input::Resize(s)) => open.call.send_input(TerminalInput::Resize {
                                cols: s.cols.min(u16::MAX.into()) as u16,
                                rows: s.rows.min(u16::MAX.into()) as u16,
                            }).await,
                            Some(Input::Open(_)) => return Some((Err(Status::invalid_argument("the terminal is already open")), None)),
                            None => {
                                // The caller finished its input.
                                open.call.finish_input();
                                input = None;
                                Ok(())
                            }
                        };
                        if let Err(e) = sent {
                            return Some((Err(e.into()), None));
                        }
                    }
                    next = open.call.next() => match next {
                        None => return None,
                        Some(Err(e)) => return Some((Err(e.into()), None)),
                        Some(Ok(response)) => {
                            if let Some(event) = convert::terminal_event(response) {
                                return Some((Ok(event), Some((open, input))));
                            }
                        }
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let peer = peer(&request)?;
        let info = self
            .registry
            .send(StatusMsg { peer: peer.clone() })
            .await
            .map_err(mailbox)?;
        let live = self.routes.borrow().sessions.keys().cloned().collect();
        let logins = self
            .logins
            .send(ListLogins {
                peer: Some(peer.clone()),
                live_sessions: live,
            })
            .await
            .map_err(mailbox)?;
        let mut response = convert::status_response(info, logins);
        response.forwards = self
            .forwards
            .list(peer.uid)
            .into_iter()
            .map(forward::forward_status)
            .collect();
        response.ssh_proxy = self
            .ssh_proxies
            .view(peer.uid)
            .map(ssh_proxy::ssh_proxy_status);
        Ok(Response::new(response))
    }

    type SsoLoginStream = EventStream<pb::SsoLoginEvent>;

    async fn sso_login(
        &self,
        request: Request<pb::SsoLoginRequest>,
    ) -> Result<Response<Self::SsoLoginStream>, Status> {
        self.sso_login_impl(request).await
    }

    async fn certificate_login(
        &self,
        request: Request<pb::CertificateLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.certificate_login_impl(request).await
    }

    async fn access_token_login(
        &self,
        request: Request<pb::AccessTokenLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.access_token_login_impl(request).await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.logout_impl(request).await
    }

    async fn enroll_client(
        &self,
        request: Request<pb::EnrollClientRequest>,
    ) -> Result<Response<pb::EnrollClientResponse>, Status> {
        self.enroll_client_impl(request).await
    }

    async fn create_service_otp(
        &self,
        request: Request<pb::CreateServiceOtpRequest>,
    ) -> Result<Response<pb::CreateServiceOtpResponse>, Status> {
        self.create_service_otp_impl(request).await
    }

    async fn create_access_token(
        &self,
        request: Request<pb::CreateAccessTokenRequest>,
    ) -> Result<Response<pb::CreateAccessTokenResponse>, Status> {
        self.create_access_token_impl(request).await
    }

    async fn service_cloud(
        &self,
        request: Request<pb::ServiceCloudRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        self.service_cloud_impl(request).await
    }

    async fn service_direct_with_sso(
        &self,
        request: Request<pb::ServiceDirectWithSsoRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        self.service_direct_with_sso_impl(request).await
    }

    async fn wait(
        &self,
        request: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        self.wait_impl(request).await
    }

    async fn list_known_services(
        &self,
        request: Request<pb::ListKnownServicesRequest>,
    ) -> Result<Response<pb::ListKnownServicesResponse>, Status> {
        let peer = peer(&request)?;
        let known = self
            .registry
            .send(ListKnownServices { peer })
            .await
            .map_err(mailbox)?;
        let services = known
            .into_iter()
            .map(|(target, fp)| pb::KnownService {
                target,
                fingerprint: fp.to_string(),
            })
            .collect();
        Ok(Response::new(pb::ListKnownServicesResponse { services }))
    }

    async fn forget_known_service(
        &self,
        request: Request<pb::ForgetKnownServiceRequest>,
    ) -> Result<Response<pb::ForgetKnownServiceResponse>, Status> {
        let peer = peer(&request)?;
        let target = request.into_inner().target;
        let (target, fp) = self
            .registry
            .send(ForgetKnownService { peer, target })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(pb::ForgetKnownServiceResponse {
            fingerprint: fp.to_string(),
            target,
        }))
    }

    async fn forward_start(
        &self,
        request: Request<pb::ForwardStartRequest>,
    ) -> Result<Response<pb::ForwardStatus>, Status> {
        self.forward_start_impl(request).await
    }

    async fn socks_proxy_start(
        &self,
        request: Request<pb::SocksProxyStartRequest>,
    ) -> Result<Response<pb::ForwardStatus>, Status> {
        self.socks_proxy_start_impl(request).await
    }

    async fn forward_stop(
        &self,
        request: Request<pb::ForwardStopRequest>,
    ) -> Result<Response<pb::ForwardStopResponse>, Status> {
        self.forward_stop_impl(request).await
    }

    async fn forward_list(
        &self,
        request: Request<pb::ForwardListRequest>,
    ) -> Result<Response<pb::ForwardListResponse>, Status> {
        self.forward_list_impl(request).await
    }

    async fn ssh_proxy_start(
        &self,
        request: Request<pb::SshProxyStartRequest>,
    ) -> Result<Response<pb::SshProxyStatus>, Status> {
        self.ssh_proxy_start_impl(request).await
    }

    async fn ssh_proxy_stop(
        &self,
        request: Request<pb::SshProxyStopRequest>,
    ) -> Result<Response<pb::SshProxyStopResponse>, Status> {
        self.ssh_proxy_stop_impl(request).await
    }
}
