//! How a QUIC link reaches its service and logs in (no actor state: the
//! `DirectLink` actor runs one dial per connection attempt).
//!
//! * [`Dialer::Password`] — straight to the RPC socket, username + password;
//!   over QUIC, or over TLS/TCP to its `rpc_url` when one is given.
//! * [`Dialer::Cloud`] with [`CloudRoute::Relayed`] — a tunnel through the
//!   relay, carrying a QUIC connection end-to-end encrypted to the service
//!   (pinned to the fingerprint the service published at enrollment, or
//!   the caller's), logging in with the relay's assertion.
//! * [`Dialer::Cloud`] with [`CloudRoute::Direct`] — straight to the
//!   service's RPC socket, logging in with the relay's assertion
//!   (`service_direct_with_sso`).
//!
//! Every way yields the same [`DirectConnection`], so everything above the
//! dial is shared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::Addr;
use quinn::Endpoint;

use super::cloud_login::{CloudLogin, GetRelay};
use super::direct_client::{self, DirectConnection, DirectTarget};
use super::link::LinkError;
use super::link_actor::Transport;
use super::relay_client::{self, CloudError};
use crate::secret::Secret;
use crate::task::AbortOnDrop;
pub use crate::transport_policy::{TransportMode, TransportPolicy, race};
use crate::wire::conn::{TransportLimits, client_endpoint, transport_config};
use crate::wire::messages::{Credentials, ErrorCode, WireError};
use crate::wire::mux::{Carrier as MuxCarrier, Conn};
use crate::wire::pin::Fingerprint;
use crate::wire::tcp::RpcUrl;
use crate::wire::tunnel::{Carrier, TunnelEndpoint, TunnelRole};

#[derive(Clone)]
pub enum Dialer {
    Password {
        password: Secret,
        /// Set: over TCP to the service's TCP RPC listener (the link's
        /// target is then this URL).
        rpc_url: Option<RpcUrl>,
        /// The HTTP proxy the TCP connection goes through (with `rpc_url`,
        /// or `fallback`).
        proxy: Option<crate::proxy::Proxy>,
        /// Without `rpc_url`: the service's TCP listener, raced against
        /// QUIC as `policy` says (see [`TransportPolicy`]).
        fallback: Option<RpcUrl>,
        policy: TransportPolicy,
    },
    Cloud(CloudTarget),
}

/// One connection attempt of a link.
pub struct DialRequest<'a> {
    /// The link's target, as errors name it (`host:port`, a URL, a serial).
    pub label: &'a str,
    /// The remote user to log in as.
    pub username: &'a str,
    /// A UDP endpoint kept from an earlier attempt (returned for reuse).
    pub endpoint: Option<Endpoint>,
    /// The certificate the link already knows.
    pub fingerprint: Option<Fingerprint>,
    pub limits: &'a TransportLimits,
    pub connect_timeout: Duration,
    /// A probe of QUIC by a link on TCP (no race).
    pub quic_only: bool,
}

#[derive(Clone)]
pub struct CloudTarget {
    pub login: Addr<CloudLogin>,
    pub serial: String,
    pub route: CloudRoute,
    /// The caller's end-to-end pin (`e2ee_fingerprint`); else the one the
    /// service published at enrollment.
    pub e2ee: Option<Fingerprint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudRoute {
    Relayed,
    /// `addr`: `host:port` from the caller, else the service's advertised one.
    Direct {
        addr: Option<String>,
    },
}

impl Dialer {
    /// How links made by this dialer reach their service.
    pub fn transport(&self) -> Transport {
        match self {
            Self::Password { .. } => Transport::Direct,
            Self::Cloud(CloudTarget {
                route: CloudRoute::Relayed,
                ..
            }) => Transport::Relayed,
            Self::Cloud(_) => Transport::DirectSso,
        }
    }

    /// How a connection made by this dialer travels, for `status`: `quic`,
    /// `tcp`, or `tcp via proxy HOST:PORT` (never the proxy's credentials).
    pub fn carrier(&self, conn: &Conn) -> String {
        match (self, conn.carrier()) {
            (
                Self::Password {
                    proxy: Some(proxy), ..
                },
                MuxCarrier::Tcp,
            ) => format!("tcp via proxy {}", proxy.address()),
            (_, carrier) => carrier.as_str().into(),
        }
    }

    /// Whether a link on TCP should keep trying QUIC (it fell back).
    pub fn probes_quic(&self) -> bool {
        matches!(
            self,
            Self::Password {
                rpc_url: None,
                fallback: Some(_),
                policy: TransportPolicy {
                    mode: TransportMode::Auto,
                    ..
                },
                ..
            }
        )
    }

    /// How often a link on TCP tries QUIC again (see [`Self::probes_quic`]).
    pub fn quic_probe(&self) -> Option<Duration> {
        match self {
            Self::Password { policy, .. } if self.probes_quic() => Some(policy.quic_probe),
            _ => None,
        }
    }

    /// One connection attempt (see [`DialRequest`]), given up after its
    /// `connect_timeout` with an error that says what was being waited
    /// for.
    pub async fn dial(
        &self,
        request: DialRequest<'_>,
    ) -> Result<(Option<Endpoint>, DirectConnection), LinkError> {
        let DialRequest {
            label,
            username,
            endpoint,
            fingerprint,
            limits,
            connect_timeout,
            quic_only,
        } = request;
        let deadline = Instant::now() + connect_timeout;
        let attempt = async {
            match self {
                Self::Password {
                    password,
                    rpc_url,
                    proxy,
                    fallback,
                    policy,
                } => {
                    let target = |addr, rpc_url: Option<&RpcUrl>| DirectTarget {
                        label: label.to_string(),
                        addr,
                        username: username.to_string(),
                        password: password.clone(),
                        fingerprint,
                        rpc_url: rpc_url.cloned(),
                        proxy: proxy.clone(),
                    };
                    let tcp = |url: &RpcUrl| {
                        let url = url.clone();
                        async move {
                            // Through a proxy, the proxy resolves the name.
                            let addr = match proxy {
                                Some(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                                None => resolve(&url.authority()).await?,
                            };
                            direct_client::connect_tcp(&target(addr, Some(&url)), limits).await
                        }
                    };
                    if let Some(url) = rpc_url {
                        return Ok((endpoint, tcp(url).await?));
                    }
                    let quic = async {
                        let addr = resolve(label).await?;
                        let endpoint = reuse_or_bind(endpoint.clone(), addr, label)?;
                        let connected =
                            direct_client::connect(&endpoint, &target(addr, None), limits).await?;
                        Ok((Some(endpoint), connected))
                    };
                    match (fallback, policy.mode) {
                        _ if quic_only => quic.await,
                        (Some(url), TransportMode::Tcp) => Ok((endpoint.clone(), tcp(url).await?)),
                        (Some(url), TransportMode::Auto) => {
                            race(
                                quic,
                                policy.quic_head_start,
                                async { Ok((endpoint.clone(), tcp(url).await?)) },
                                |e| matches!(e, LinkError::Unreachable { .. }),
                            )
                            .await
                        }
                        _ => quic.await,
                    }
                }
                Self::Cloud(cloud) => cloud.dial(label, endpoint, limits, deadline).await,
            }
        };
        by_deadline(
            deadline,
            label,
            format!("no answer within {connect_timeout:?}"),
            attempt,
        )
        .await
    }
}

/// `attempt`, given up at `deadline` as `label` unreachable for `reason`.
async fn by_deadline<T>(
    deadline: Instant,
    label: &str,
    reason: String,
    attempt: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout_at(deadline, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(LinkError::Unreachable {
                target: label.to_string(),
                reason,
            })
        })
}

/// A tunnel whose packets never got through says where they were going:
/// the relay's packet port, which a firewall may block.
fn explain_packet_path(error: LinkError, carrier: Carrier) -> LinkError {
    match (error, carrier) {
        (LinkError::Unreachable { target, reason }, Carrier::Packets { relay, .. }) => {
            LinkError::Unreachable {
                target,
                reason: format!(
                    "{reason} (through the relay's packet port {relay}: is UDP to it \
                     blocked here? A relay run with `--packet-listen off` carries \
                     tunnels over its QUIC port instead)"
                ),
            }
        }
        (error, _) => error,
    }
}

impl CloudTarget {
    async fn dial(
        &self,
        label: &str,
        endpoint: Option<Endpoint>,
        limits: &TransportLimits,
        deadline: Instant,
    ) -> Result<(Option<Endpoint>, DirectConnection), LinkError> {
        let relay = self
            .login
            .send(GetRelay)
            .await
            .map_err(|e| LinkError::Closed(format!("the login is gone ({e})")))?
            .map_err(|e| link_error(label, e))?;
        match &self.route {
            CloudRoute::Relayed => {
                let assertion = relay_client::assertion(&relay.conn, &self.serial, limits);
                let tunnel = relay_client::open_tunnel(&relay.conn, &self.serial, limits);
                let ((token, _), open) =
                    futures::try_join!(assertion, tunnel).map_err(|e| link_error(label, e))?;
                let tunnel = TunnelEndpoint::start(
                    TunnelRole::Client,
                    open.send,
                    open.recv,
                    None,
                    open.carrier,
                    limits,
                )
                .map_err(|e| LinkError::Unreachable {
                    target: label.to_string(),
                    reason: e.to_string(),
                })?;
                let pin = self.e2ee.unwrap_or(Fingerprint(open.facts.fingerprint));
                let credentials = Credentials::Assertion {
                    token: token.expose().to_string(),
                };
                let login = direct_client::login(
                    &tunnel.endpoint,
                    tunnel.peer,
                    label,
                    credentials,
                    Some(pin),
                    tunnel.transport.clone(),
                    limits,
                );
                // Bounded here (the caller's bound fires at the same
                // instant, after this one is seen) to say where the
                // packets were going.
                let mut connected = by_deadline(deadline, label, "no answer".into(), login)
                    .await
                    .map_err(|e| explain_packet_path(e, open.carrier))?;
                // The carrier stream ending (relay or service gone) ends
                // the inner connection at once, so the link reconnects
                // instead of waiting out an idle timeout.
                let conn = connected.conn.clone();
                let closed = tunnel.closed();
                let watch = AbortOnDrop::new(tokio::spawn(async move {
                    closed.await;
                    conn.close(0, b"tunnel closed");
                }));
                // The relay connection stays open while its tunnel lives
                // (over TCP the streams alone do not hold it), even when
                // the login has moved on to another (back to QUIC).
                connected.guard = Some(Box::new((tunnel, watch, relay)));
                Ok((None, connected))
            }
            CloudRoute::Direct { addr } => {
                let (token, facts) = relay_client::assertion(&relay.conn, &self.serial, limits)
                    .await
                    .map_err(|e| link_error(label, e))?;
                let target =
                    addr.clone()
                        .or(facts.advertise)
                        .ok_or_else(|| LinkError::Refused {
                            target: label.to_string(),
                            error: WireError::new(
                                ErrorCode::InvalidArgument,
                                format!(
                                    "service {} advertises no direct address; give host and port",
                                    self.serial
                                ),
                            ),
                        })?;
                let sockaddr = resolve(&target).await?;
                let endpoint = reuse_or_bind(endpoint, sockaddr, label)?;
                let pin = self.e2ee.unwrap_or(Fingerprint(facts.fingerprint));
                let credentials = Credentials::Assertion {
                    token: token.expose().to_string(),
                };
                let connected = direct_client::login(
                    &endpoint,
                    sockaddr,
                    label,
                    credentials,
                    Some(pin),
                    Arc::new(transport_config(limits)),
                    limits,
                )
                .await?;
                Ok((Some(endpoint), connected))
            }
        }
    }
}

/// Relay trouble as the link reports it: an offline service or an
/// unreachable relay is worth retrying; a refusal is final.
fn link_error(label: &str, e: CloudError) -> LinkError {
    match e {
        CloudError::Unreachable { reason, .. } => LinkError::Unreachable {
            target: label.to_string(),
            reason,
        },
        CloudError::Refused(error) if error.code == ErrorCode::Unavailable => {
            LinkError::Unreachable {
                target: label.to_string(),
                reason: error.message,
            }
        }
        CloudError::Refused(error) => LinkError::Refused {
            target: label.to_string(),
            error,
        },
        other => LinkError::Refused {
            target: label.to_string(),
            error: WireError::new(other.code(), other.to_string()),
        },
    }
}

fn reuse_or_bind(
    endpoint: Option<Endpoint>,
    addr: SocketAddr,
    label: &str,
) -> Result<Endpoint, LinkError> {
    match endpoint {
        Some(e) => Ok(e),
        None => client_endpoint(addr).map_err(|e| LinkError::Unreachable {
            target: label.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Resolves `host:port` (DNS when needed) to the first address.
pub async fn resolve(target: &str) -> Result<SocketAddr, LinkError> {
    let unreachable = |reason: String| LinkError::Unreachable {
        target: target.to_string(),
        reason,
    };
    tokio::net::lookup_host(target)
        .await
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| unreachable("name resolves to no address".into()))
}
