//! The front door's cloud calls: logins, enrollment, cloud services, Wait.
//! Each turns one gRPC call into messages to the `LoginRegistry`, a
//! `CloudLogin` and the `SessionRegistry`.

use std::time::Duration;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{EventStream, FrontDoor, mailbox, peer, service_response};
use crate::api::{convert, pb};
use crate::broker::client_key;
use crate::broker::cloud_login::{
    CloudLogin, Credential, GetRelay, LoginKey, LoginMethod, LoginPhase, LoginSummary,
};
use crate::broker::dialer::{CloudRoute, CloudTarget};
use crate::broker::error::BrokerError;
use crate::broker::link_actor::Acquire;
use crate::broker::login_registry::{
    CredentialLogin, FindLogin, LogoutLogins, RelaySpec, StartSso,
};
use crate::broker::peer::Peer;
use crate::broker::registry::ServiceCloud;
use crate::broker::relay_client::{self, CloudError};
use crate::secret::Secret;
use crate::wire::conn::TransportLimits;
use crate::wire::pin::Fingerprint;
use crate::wire::relay::{RelayReply, RelayRequest};

/// Which relay a request means, and the proxy it names (a bad proxy URL
/// is `INVALID_ARGUMENT`, never echoing credentials).
fn relay_spec(selector: Option<pb::RelaySelector>) -> Result<RelaySpec, Status> {
    let s = selector.unwrap_or_default();
    let proxy = match s.proxy_url.as_str() {
        "" => None,
        url => Some(
            crate::proxy::Proxy::parse(
                url,
                Some(s.proxy_password)
                    .filter(|p| !p.is_empty())
                    .map(Secret::new),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        ),
    };
    Ok(RelaySpec {
        relay_url: Some(s.relay_url).filter(|u| !u.is_empty()),
        domain: Some(s.domain).filter(|d| !d.is_empty()),
        proxy,
    })
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

fn login_response(summary: &LoginSummary) -> pb::LoginResponse {
    pb::LoginResponse {
        identity: summary.key.identity.clone(),
        relay_url: summary.key.relay.clone(),
        method: summary.key.method.as_str().into(),
        expires_unix: summary.expires.unwrap_or(0),
    }
}

fn e2ee(text: &str) -> Result<Option<Fingerprint>, Status> {
    match text {
        "" => Ok(None),
        t => Fingerprint::parse(t).map(Some).ok_or_else(|| {
            Status::invalid_argument("e2ee_fingerprint must be 32 bytes of hex (colons allowed)")
        }),
    }
}

fn cloud_status(e: CloudError) -> Status {
    BrokerError::from(e).into()
}

impl FrontDoor {
    async fn find_login(
        &self,
        peer: Peer,
        session_id: String,
        identity: String,
    ) -> Result<(LoginKey, actix::Addr<CloudLogin>), Status> {
        Ok(self
            .logins
            .send(FindLogin {
                peer,
                session_id: non_empty(session_id),
                identity: non_empty(identity),
            })
            .await
            .map_err(mailbox)??)
    }

    /// Sends one request to the relay with the caller's login.
    async fn relay_call(
        &self,
        peer: Peer,
        session_id: String,
        identity: String,
        request: RelayRequest,
    ) -> Result<(LoginKey, RelayReply), Status> {
        let (key, login) = self.find_login(peer, session_id, identity).await?;
        let relay = login
            .send(GetRelay)
            .await
            .map_err(mailbox)?
            .map_err(cloud_status)?;
        let reply = relay_client::call(&relay.conn, &request, &TransportLimits::default())
            .await
            .map_err(cloud_status)?;
        Ok((key, reply))
    }

    pub(super) async fn sso_login_impl(
        &self,
        request: Request<pb::SsoLoginRequest>,
    ) -> Result<Response<EventStream<pb::SsoLoginEvent>>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let (key, phase) = self
            .logins
            .send(StartSso {
                peer,
                session_id: non_empty(r.session_id),
                identity: r.identity,
                relay: relay_spec(r.relay)?,
            })
            .await
            .map_err(mailbox)??;
        let key = std::sync::Arc::new(key);
        // Each phase change becomes an event; the stream ends after the
        // outcome.
        let events = futures::stream::unfold(Some((phase, true)), move |state| {
            let key = key.clone();
            async move {
                let (mut phase, mut first) = state?;
                loop {
                    if !first && phase.changed().await.is_err() {
                        return Some((Err(Status::unavailable("the login was closed")), None));
                    }
                    first = false;
                    let current = phase.borrow_and_update().clone();
                    let event = match current {
                        LoginPhase::Prompt(p) => Some(Ok(pb::SsoLoginEvent {
                            event: Some(pb::sso_login_event::Event::Prompt(pb::SsoPrompt {
                                verification_uri: p.verification_uri,
                                verification_uri_complete: p
                                    .verification_uri_complete
                                    .unwrap_or_default(),
                                user_code: p.user_code,
                                expires_in_secs: p.expires_in.as_secs() as u32,
                            })),
                        })),
                        LoginPhase::LoggedIn { identity, expires } => {
                            let done = pb::SsoLoginEvent {
                                event: Some(pb::sso_login_event::Event::LoggedIn(
                                    pb::LoginResponse {
                                        identity,
                                        relay_url: key.relay.clone(),
                                        method: LoginMethod::Sso.as_str().into(),
                                        expires_unix: expires.unwrap_or(0),
                                    },
                                )),
                            };
                            return Some((Ok(done), None));
                        }
                        LoginPhase::Failed(reason) => {
                            return Some((Err(Status::unauthenticated(reason)), None));
                        }
                        LoginPhase::Idle => None,
                    };
                    if let Some(event) = event {
                        return Some((event, Some((phase, false))));
                    }
                }
            }
        })
        .boxed();
        Ok(Response::new(events))
    }

    async fn credential_login(
        &self,
        peer: Peer,
        session_id: String,
        identity: String,
        relay: Option<pb::RelaySelector>,
        method: LoginMethod,
        credential: Credential,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let summary = self
            .logins
            .send(CredentialLogin {
                peer,
                session_id: non_empty(session_id),
                identity,
                relay: relay_spec(relay)?,
                method,
                credential,
            })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(login_response(&summary)))
    }

    pub(super) async fn certificate_login_impl(
        &self,
        request: Request<pb::CertificateLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let cert_der = {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(r.cert_pem.as_bytes())
                .map_err(|e| Status::invalid_argument(format!("cert_pem: {e}")))?
                .to_vec()
        };
        let password = Secret::new(r.key_password);
        let blob = r.encrypted_key;
        let key_der = crate::password::hashing(move || client_key::decrypt(&blob, &password))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let credential = Credential::Certificate { cert_der, key_der };
        self.credential_login(
            peer,
            r.session_id,
            r.identity,
            r.relay,
            LoginMethod::Certificate,
            credential,
        )
        .await
    }

    pub(super) async fn access_token_login_impl(
        &self,
        request: Request<pb::AccessTokenLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let token = r.token.trim().to_string();
        if token.is_empty() {
            return Err(Status::invalid_argument("the access token is empty"));
        }
        let credential = Credential::Token {
            token: Secret::new(token),
        };
        self.credential_login(
            peer,
            r.session_id,
            String::new(),
            r.relay,
            LoginMethod::Token,
            credential,
        )
        .await
    }

    pub(super) async fn logout_impl(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let peer = peer(&request)?;
        let r = request.into_inner();
        let logged_out = self
            .logins
            .send(LogoutLogins {
                peer,
                identity: non_empty(r.identity),
                relay: relay_spec(r.relay)?,
            })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(pb::LogoutResponse { logged_out }))
    }

    pub(super) async fn enroll_client_impl(
        &self,
        request: Request<pb::EnrollClientRequest>,
    ) -> Result<Response<pb::EnrollClientResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let password = Secret::new(r.key_password);
        if password.is_empty() {
            return Err(Status::invalid_argument(
                "choose a password to encrypt the key with",
            ));
        }
        // The relay writes the identity it authenticated as the subject.
        let (csr, key_der) = crate::tls::new_certificate_request("switchyard client")
            .map_err(|e| Status::internal(e.to_string()))?;
        let (key, reply) = self
            .relay_call(
                peer,
                r.session_id,
                r.identity,
                RelayRequest::IssueClientCert { csr_der: csr },
            )
            .await?;
        let RelayReply::ClientCert { cert_der, .. } = reply else {
            return Err(Status::internal(format!(
                "unexpected relay reply {reply:?}"
            )));
        };
        let encrypted_key =
            crate::password::hashing(move || client_key::encrypt(&key_der, &password))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::EnrollClientResponse {
            identity: key.identity,
            relay_url: key.relay,
            cert_pem: pem::encode(&pem::Pem::new("CERTIFICATE", cert_der)),
            encrypted_key,
        }))
    }

    pub(super) async fn create_service_otp_impl(
        &self,
        request: Request<pb::CreateServiceOtpRequest>,
    ) -> Result<Response<pb::CreateServiceOtpResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let (_, reply) = self
            .relay_call(
                peer,
                r.session_id,
                r.identity,
                RelayRequest::ServiceOtp { serial: r.serial },
            )
            .await?;
        match reply {
            RelayReply::Otp { otp, expires_unix } => {
                Ok(Response::new(pb::CreateServiceOtpResponse {
                    otp,
                    expires_unix,
                }))
            }
            other => Err(Status::internal(format!(
                "unexpected relay reply {other:?}"
            ))),
        }
    }

    pub(super) async fn create_access_token_impl(
        &self,
        request: Request<pb::CreateAccessTokenRequest>,
    ) -> Result<Response<pb::CreateAccessTokenResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let lifetime_secs = if r.lifetime_secs == 0 {
            7 * 86400
        } else {
            r.lifetime_secs
        };
        let (_, reply) = self
            .relay_call(
                peer,
                r.session_id,
                r.identity,
                RelayRequest::CreateToken { lifetime_secs },
            )
            .await?;
        match reply {
            RelayReply::Token {
                id,
                token,
                expires_unix,
            } => Ok(Response::new(pb::CreateAccessTokenResponse {
                id,
                token,
                expires_unix,
            })),
            other => Err(Status::internal(format!(
                "unexpected relay reply {other:?}"
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn cloud_service(
        &self,
        peer: Peer,
        session_id: String,
        name: String,
        identity: String,
        serial: String,
        route: CloudRoute,
        fingerprint: &str,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        self.admit()?;
        let e2ee = e2ee(fingerprint)?;
        let (login_key, login) = self
            .find_login(peer.clone(), session_id.clone(), identity)
            .await?;
        let info = self
            .registry
            .send(ServiceCloud {
                peer,
                session_id: non_empty(session_id),
                name: non_empty(name),
                login: login_key,
                target: CloudTarget {
                    login,
                    serial,
                    route,
                    e2ee,
                },
            })
            .await
            .map_err(mailbox)??;
        Ok(Response::new(service_response(info)))
    }

    pub(super) async fn service_cloud_impl(
        &self,
        request: Request<pb::ServiceCloudRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let peer = peer(&request)?;
        let r = request.into_inner();
        self.cloud_service(
            peer,
            r.session_id,
            r.name,
            r.identity,
            r.serial,
            CloudRoute::Relayed,
            &r.e2ee_fingerprint,
        )
        .await
    }

    pub(super) async fn service_direct_with_sso_impl(
        &self,
        request: Request<pb::ServiceDirectWithSsoRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let peer = peer(&request)?;
        let r = request.into_inner();
        let addr = match (r.host.as_str(), r.port) {
            ("", _) => None,
            (host, 0) => Some(format!("{host}:8181")),
            (host, port) => {
                let port = u16::try_from(port)
                    .map_err(|_| Status::invalid_argument("port must be 1-65535"))?;
                Some(format!("{host}:{port}"))
            }
        };
        self.cloud_service(
            peer,
            r.session_id,
            r.name,
            r.identity,
            r.serial,
            CloudRoute::Direct { addr },
            &r.e2ee_fingerprint,
        )
        .await
    }

    pub(super) async fn wait_impl(
        &self,
        request: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let timeout = if r.timeout_secs > 0.0 {
            Duration::try_from_secs_f64(r.timeout_secs)
                .map_err(|_| Status::invalid_argument("timeout_secs is out of range"))?
        } else {
            Duration::from_secs(30)
        };
        let service = convert::service_ref(r.service)?;
        let resolved = self.routes.borrow().resolve(&peer, &service)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watch = resolved.watch;
        loop {
            let last_error = match resolved
                .acquire
                .send(Acquire { hold: false })
                .await
                .map_err(mailbox)?
            {
                Ok(acquired) => {
                    return Ok(Response::new(pb::WaitResponse {
                        service_name: acquired.service_name,
                    }));
                }
                Err(e) if e.code() == crate::wire::messages::ErrorCode::Unavailable => {
                    e.to_string()
                }
                Err(e) => return Err(BrokerError::from(e).into()),
            };
            // The link retries on its own while held; wake when it
            // publishes a live channel (or at the deadline).
            let up = tokio::time::timeout_at(deadline, watch.wait_for(|c| c.is_some())).await;
            match up {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return Err(Status::unavailable("the service handle was closed")),
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "{last_error} (waited {:.0} s)",
                        timeout.as_secs_f64()
                    )));
                }
            }
        }
    }
}
