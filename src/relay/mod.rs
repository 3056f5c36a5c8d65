//! `switchyard relay`: the cloud.
//!
//! * `state` — the state directory (CA, keys, database) made at `init`.
//! * `store` — the database: identity-provider users, tokens, OTPs,
//!   certificates, enrolled services (SQLite, one node).
//! * `pg` — the same on PostgreSQL, shared by the nodes of a tier.
//! * `db` — the interface the relay uses: either of the two.
//! * `ca` — the certificate authority (rcgen).
//! * `tokens` — signed access/refresh tokens and caller assertions (JWT).
//! * `device_flow` — RFC 8628 device grants (sans-IO).
//! * `http` — the HTTPS listener: OAuth endpoints, the approval page,
//!   service enrollment.
//! * `quic` — the QUIC listener: client and service connections, tunnels.
//! * `limits` — per-address and per-user budgets (grant starts, sign-ins).
//! * `live` — live connections by credential; revocations close them.
//! * `nodes` — a tier's node-to-node links (mutual TLS), for forwarding
//!   a tunnel one hop to the node its service is on.
//!
//! [`Relay`] owns both listeners and every task under them (one
//! cancellation tree); dropping or shutting it down ends them all.
//! **Invariant:** the relay never sees a broker↔service payload in the
//! clear: tunnels carry an end-to-end encrypted QUIC connection it has no
//! keys for (see `wire::tunnel`). Layers: `relay` → `wire`; it never
//! imports `broker` or `service`.

pub mod ca;
pub mod db;
pub mod device_flow;
pub mod http;
pub mod limits;
pub mod live;
pub mod nodes;
pub mod packets;
pub mod pg;
pub mod quic;
pub mod state;
pub mod store;
pub mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::db::Database;
use self::device_flow::DeviceFlowConfig;
use self::state::{RelayKeys, RelayState};
use self::store::StoreError;
use self::tokens::TokenError;
use crate::task::AbortOnDrop;
use crate::wire::conn::TransportLimits;
use crate::wire::messages::{ErrorCode, WireError};
use crate::wire::relay::TokenClaims;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Settings of a running relay.
#[derive(Clone)]
pub struct RelayConfig {
    /// QUIC listener for brokers and services.
    pub listen: SocketAddr,
    /// Also listen on TCP (TLS 1.3 + HTTP/2) at the QUIC listener's
    /// address and port, for callers whose network blocks UDP.
    pub tcp: bool,
    /// HTTPS listener for the approval page and token endpoints.
    pub http_listen: SocketAddr,
    /// Host name or address callers use in URLs (must be in the server
    /// certificate); `None` = the HTTPS listener's address.
    pub public_host: Option<String>,
    pub device_flow: DeviceFlowConfig,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub otp_ttl: Duration,
    pub assertion_ttl: Duration,
    pub limits: TransportLimits,
    /// Bounds on the HTTPS listener.
    pub http_limits: http::HttpLimits,
    /// Bounds on QUIC connections that have not logged in yet.
    pub prelogin: quic::PreloginLimits,
    /// UDP port through which tunnels' end-to-end datagrams are forwarded
    /// as they are (`None`: tunnels carry them inside relayed streams).
    pub packet_listen: Option<SocketAddr>,
    /// Test hook: the packet port told to brokers instead of the real one,
    /// to play a firewall that blocks it. Never set in production.
    pub misdirect_client_packets: Option<u16>,
    /// Test hook: a copy of every byte the relay forwards through tunnels
    /// (used to prove the relay sees only ciphertext). Never set in
    /// production; `try_send`, so it can never slow forwarding.
    pub tap: Option<mpsc::Sender<Bytes>>,
    /// In a tier: the address other nodes reach this node's QUIC listener
    /// at (`None`: the listener's own address).
    pub node_address: Option<SocketAddr>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            tcp: true,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            // Ephemeral: peers learn the port in each tunnel's offer (the
            // CLI's default is 4434, for firewalls).
            packet_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            misdirect_client_packets: None,
            public_host: None,
            device_flow: DeviceFlowConfig::default(),
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(30 * 86400),
            otp_ttl: Duration::from_secs(900),
            assertion_ttl: Duration::from_secs(300),
            limits: TransportLimits::default(),
            http_limits: http::HttpLimits::default(),
            prelogin: quic::PreloginLimits::default(),
            tap: None,
            node_address: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error(transparent)]
    Node(#[from] nodes::NodeError),
}

/// Why a credential was refused; each message says which case it is.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the {kind} token expired; log in again")]
    Expired { kind: &'static str },
    #[error("token {id} was revoked")]
    Revoked { id: String },
    #[error("the token is not valid for this relay")]
    Invalid,
    #[error("user {0} is disabled or unknown")]
    UserDisabled(String),
    #[error("this certificate was not issued by this relay or was revoked")]
    UnknownCertificate,
    #[error("no credentials were presented")]
    Missing,
    #[error("this certificate is not the node certificate of relay node {0}")]
    NotANode(String),
    #[error("relay database: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            Self::Store(_) => ErrorCode::Internal,
            _ => ErrorCode::Unauthenticated,
        };
        WireError::new(code, self.to_string())
    }
}

/// A service connected to the relay now (over QUIC or TCP).
#[derive(Clone)]
pub(crate) struct OnlineService {
    pub conn: crate::wire::mux::Conn,
    pub advertise: Option<String>,
    /// Streams the service opened for tunnel offers (TCP: see `quic`).
    pub slots_in: mpsc::Sender<(crate::wire::mux::SendHalf, crate::wire::mux::RecvHalf)>,
    pub slots: Arc<
        tokio::sync::Mutex<
            mpsc::Receiver<(crate::wire::mux::SendHalf, crate::wire::mux::RecvHalf)>,
        >,
    >,
    /// Cancelled when a newer connection of the same serial replaces this
    /// one: it then gets no new tunnels and is closed after
    /// `quic::REPLACED_GRACE` unless the service closes it first.
    pub replaced: tokio_util::sync::CancellationToken,
    /// The connection this one replaced, still carrying its running
    /// tunnels (at most one per serial: a third connection closes it).
    pub draining: Option<crate::wire::mux::Conn>,
}

/// What both listeners share.
pub(crate) struct RelayCore {
    /// Keys and identity (the same on every node of a tier).
    pub state: RelayKeys,
    /// The durable state (SQLite, or PostgreSQL shared by a tier).
    pub db: Database,
    pub config: RelayConfig,
    /// Device grants started through this node (the grants themselves
    /// are in `db`, shared by a tier).
    pub grants_started: AtomicU64,
    /// Device-login starts per client address.
    pub grant_starts: Mutex<limits::KeyedBudget<std::net::IpAddr>>,
    /// The approval page's sign-in attempts per address and per user.
    pub sign_ins: Mutex<limits::SignInLimiter>,
    pub online: Mutex<HashMap<String, OnlineService>>,
    /// Authenticated QUIC connections by credential (for revocation).
    pub live: live::LiveConnections,
    pub quic_addr: SocketAddr,
    /// The TCP listener (the QUIC listener's address), when there is one.
    pub tcp_addr: Option<SocketAddr>,
    /// This process's id among a tier's nodes (random per start).
    pub node_id: String,
    /// Where other nodes reach this one's QUIC listener.
    pub node_addr: SocketAddr,
    pub next_tunnel: AtomicU64,
    /// Tunnels and bytes through this node.
    pub load: NodeLoad,
    /// Links to the tier's other nodes (PostgreSQL only).
    pub links: Option<nodes::NodeLinks>,
    /// The packet port, when enabled: tunnels' datagrams cross the relay
    /// without being decrypted here.
    pub packets: Option<packets::PacketRelay>,
}

/// What passes through this node's tunnel streams: tunnels open now and
/// since start, bytes forwarded (the packet port counts its own).
#[derive(Default)]
pub(crate) struct NodeLoad {
    open: AtomicU64,
    total: AtomicU64,
    bytes: AtomicU64,
}

/// One open tunnel, counted in [`NodeLoad`] until dropped.
pub(crate) struct OpenTunnel<'a>(&'a NodeLoad);

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchyard_relay_tunnels").decrement(1.0);
    }
}

impl NodeLoad {
    /// Counts a tunnel open until the guard drops.
    pub fn tunnel(&self) -> OpenTunnel<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchyard_relay_tunnels").increment(1.0);
        metrics::counter!("switchyard_relay_tunnels_total").increment(1);
        OpenTunnel(self)
    }

    /// `n` tunnel bytes forwarded.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("switchyard_relay_tunnel_bytes_total").increment(n);
    }

    /// (tunnels open now, tunnels since start, tunnel bytes since start).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.open.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

fn token_kind_name(kind: &str) -> &'static str {
    match kind {
        "refresh" => "refresh",
        "api" => "access",
        _ => "SSO access",
    }
}

impl RelayCore {
    /// Verifies a token of one of `kinds`: signature, expiry, revocation,
    /// and that its user is still enabled.
    pub async fn check_token(&self, token: &str, kinds: &[&str]) -> Result<TokenClaims, AuthError> {
        let claims = match self.state.signer.verify_token(token) {
            Ok(claims) => claims,
            Err(TokenError::Expired) => {
                // Say which kind expired, without trusting anything else.
                let kind = jsonwebtoken::dangerous::insecure_decode::<TokenClaims>(token)
                    .map(|d| token_kind_name(&d.claims.kind))
                    .unwrap_or("access");
                return Err(AuthError::Expired { kind });
            }
            Err(_) => return Err(AuthError::Invalid),
        };
        if !kinds.contains(&claims.kind.as_str()) {
            return Err(AuthError::Invalid);
        }
        match self.db.token(&claims.jti).await? {
            Some(record) if record.revoked => {
                return Err(AuthError::Revoked { id: claims.jti });
            }
            Some(_) => {}
            None => return Err(AuthError::Invalid),
        }
        if !self.db.user_enabled(&claims.sub).await? {
            return Err(AuthError::UserDisabled(claims.sub));
        }
        Ok(claims)
    }

    /// This node's load now, with `services` connected.
    pub fn load_report(&self, services: usize) -> pg::presence::NodeLoadReport {
        let (tunnels, tunnels_total, stream_bytes) = self.load.snapshot();
        let packet_bytes = self.packets.as_ref().map_or(0, |p| p.bytes_forwarded());
        pg::presence::NodeLoadReport {
            services: services as u32,
            connections: self.live.len() as u32,
            tunnels: tunnels as u32,
            tunnels_total,
            tunnel_bytes: stream_bytes + packet_bytes,
        }
    }

    /// Issues and records a token good for `lifetime`.
    pub async fn issue_token(
        &self,
        email: &str,
        kind: &str,
        lifetime: Duration,
    ) -> Result<(TokenClaims, String), WireError> {
        self.state
            .issue_token(&self.db, email, kind, unix_now() + lifetime.as_secs())
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
    }
}

/// A tier node's heartbeat: stamps its row with its load every
/// [`pg::presence::HEARTBEAT`]; when the row was (re)made, records every
/// service connected here again. Until `cancel`.
async fn heartbeat(core: Arc<RelayCore>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(pg::presence::HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let serials: Vec<String> = core
            .online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let beat = core
            .db
            .heartbeat(
                &core.node_id,
                &core.node_addr.to_string(),
                core.load_report(serials.len()),
            )
            .await;
        match beat {
            Ok(false) => {}
            Ok(true) => {
                // The others forgot this node (it stalled): its node
                // certificate may have gone with it.
                if let Some(links) = &core.links
                    && let Err(e) = core
                        .db
                        .keep_node_cert(links.fingerprint(), &core.node_id)
                        .await
                {
                    warn!(error = %e, "cannot record this node's certificate again");
                }
                for serial in &serials {
                    if let Err(e) = core.db.set_present(serial, &core.node_id).await {
                        warn!(error = %e, %serial, "cannot record a service's presence");
                    }
                }
            }
            Err(e) => warn!(error = %e, "relay node heartbeat failed"),
        }
    }
}

/// The QUIC endpoint and, when `config.tcp`, a TCP listener on the same
/// address and port. With port 0 the system picks QUIC's port; when that
/// port is taken on TCP, another is picked (a few times).
async fn bind_quic_and_tcp(
    state: &RelayKeys,
    config: &RelayConfig,
) -> Result<(quinn::Endpoint, Option<tokio::net::TcpListener>), RelayError> {
    const TRIES: usize = 16;
    for attempt in 1.. {
        let endpoint = quic::endpoint(state, config)?;
        if !config.tcp {
            return Ok((endpoint, None));
        }
        let addr = endpoint.local_addr().map_err(|e| RelayError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok((endpoint, Some(listener))),
            Err(e) if config.listen.port() == 0 && attempt < TRIES => {
                tracing::debug!(%addr, error = %e, "TCP port taken; picking another");
            }
            Err(e) => {
                return Err(RelayError::Listen {
                    addr,
                    reason: format!("TCP (beside QUIC): {e}"),
                });
            }
        }
    }
    unreachable!("the loop returns")
}

/// A running relay.
pub struct Relay {
    core: Arc<RelayCore>,
    http_addr: SocketAddr,
    public_host: String,
    endpoint: quinn::Endpoint,
    cancel: CancellationToken,
    _tasks: Vec<AbortOnDrop<()>>,
}

impl Relay {
    /// Binds both listeners and starts serving, on the state directory's
    /// own SQLite store.
    pub async fn start(state: RelayState, config: RelayConfig) -> Result<Self, RelayError> {
        let RelayState { keys, store } = state;
        Self::start_on(keys, Database::Sqlite(Arc::new(store)), config).await
    }

    /// Binds both listeners and starts serving with `keys` on `db` (a
    /// node of a tier: PostgreSQL).
    pub async fn start_on(
        state: RelayKeys,
        db: Database,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        let (endpoint, tcp_listener) = bind_quic_and_tcp(&state, &config).await?;
        let quic_addr = endpoint.local_addr().map_err(|e| RelayError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        let tcp_addr = tcp_listener.as_ref().map(|_| quic_addr);
        let http_listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|e| RelayError::Listen {
                addr: config.http_listen,
                reason: e.to_string(),
            })?;
        let http_addr = http_listener.local_addr().map_err(|e| RelayError::Listen {
            addr: config.http_listen,
            reason: e.to_string(),
        })?;
        let public_host = config
            .public_host
            .clone()
            .unwrap_or_else(|| http_addr.ip().to_string());
        let cancel = CancellationToken::new();
        let packets = config
            .packet_listen
            .map(|bind| {
                packets::PacketRelay::start(bind, config.tap.clone(), cancel.clone()).map_err(|e| {
                    RelayError::Listen {
                        addr: bind,
                        reason: e.to_string(),
                    }
                })
            })
            .transpose()?;
        let packet_addr = packets.as_ref().map(|p| p.local_addr());
        let node_id = hex::encode(rand::random::<[u8; 8]>());
        let links = match &db {
            Database::Postgres(_) => {
                let identity = nodes::NodeIdentity::issue(&state, &db, &node_id).await?;
                Some(nodes::NodeLinks::new(
                    &identity,
                    &state,
                    endpoint.clone(),
                    &config.limits,
                )?)
            }
            Database::Sqlite(_) => None,
        };
        let core = Arc::new(RelayCore {
            grants_started: AtomicU64::new(0),
            grant_starts: Mutex::new(limits::KeyedBudget::new(
                config.http_limits.grant_starts_per_minute,
                Duration::from_secs(60) / config.http_limits.grant_starts_per_minute.max(1),
                65_536,
            )),
            sign_ins: Mutex::new(limits::SignInLimiter::default()),
            online: Mutex::new(HashMap::new()),
            live: live::LiveConnections::default(),
            quic_addr,
            tcp_addr,
            node_id,
            node_addr: config.node_address.unwrap_or(quic_addr),
            next_tunnel: AtomicU64::new(1),
            load: NodeLoad::default(),
            links,
            packets,
            state,
            db,
            config,
        });
        let tls = http::tls_config(&core.state)?;
        let prelogin = quic::prelogin_slots(&core);
        let mut tasks = vec![
            AbortOnDrop::new(tokio::spawn(quic::serve(
                endpoint.clone(),
                core.clone(),
                prelogin.clone(),
                cancel.clone(),
            ))),
            AbortOnDrop::new(tokio::spawn(live::watch(core.clone(), cancel.clone()))),
            AbortOnDrop::new(tokio::spawn(http::serve(
                http_listener,
                tls,
                core.clone(),
                cancel.clone(),
            ))),
        ];
        if let Some(listener) = tcp_listener {
            tasks.push(AbortOnDrop::new(tokio::spawn(quic::serve_tcp(
                listener,
                quic::tcp_acceptor(&core.state)?,
                core.clone(),
                prelogin,
                cancel.clone(),
            ))));
        }
        if let Database::Postgres(_) = core.db {
            tasks.push(AbortOnDrop::new(tokio::spawn(heartbeat(
                core.clone(),
                cancel.clone(),
            ))));
        }
        info!(quic = %quic_addr, tcp = ?tcp_addr, https = %http_addr, packets = ?packet_addr, node = %core.node_id, database = core.db.kind(), "relay listening");
        Ok(Self {
            core,
            http_addr,
            public_host,
            endpoint,
            cancel,
            _tasks: tasks,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.core.quic_addr
    }

    /// The TCP listener (the QUIC listener's address), unless turned off.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.core.tcp_addr
    }

    /// The packet port, when enabled.
    pub fn packet_addr(&self) -> Option<SocketAddr> {
        self.core.packets.as_ref().map(|p| p.local_addr())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The base URL brokers and services are given.
    pub fn url(&self) -> String {
        let host = if self.public_host.contains(':') {
            format!("[{}]", self.public_host)
        } else {
            self.public_host.clone()
        };
        format!("https://{host}:{}", self.http_addr.port())
    }

    /// Device grants started through this node since start-up.
    pub fn grants_started(&self) -> u64 {
        self.core.grants_started.load(Ordering::Relaxed)
    }

    /// Authenticated QUIC connections (clients and services) now.
    pub fn live_connections(&self) -> usize {
        self.core.live.len()
    }

    /// Client (broker) connections admitted since start-up, closed ones
    /// included: one per login and reconnect.
    pub fn clients_admitted(&self) -> u64 {
        self.core.live.clients_admitted()
    }

    /// Device grants open now in the store (started, neither redeemed
    /// nor expired; every node's, on a tier).
    pub async fn grants_pending(&self) -> Result<usize, StoreError> {
        self.core
            .db
            .pending_grants(device_flow::unix_now_ms())
            .await
    }

    /// This node's load now (what its heartbeat reports).
    pub fn load(&self) -> pg::presence::NodeLoadReport {
        self.core.load_report(self.services_online())
    }

    /// Links this node opened to other nodes of its tier since start.
    pub fn node_links_opened(&self) -> u64 {
        self.core.links.as_ref().map_or(0, |l| l.opened())
    }

    /// Tunnel datagrams exchanged with other nodes' packet ports (both
    /// ways) since start: a forwarded tunnel on the packet path.
    pub fn node_datagrams(&self) -> u64 {
        self.core.packets.as_ref().map_or(0, |p| p.node_datagrams())
    }

    /// Datagrams the packet port dropped since start for reason `why`
    /// (hostile or stray input: see `packets::Dropped`).
    pub fn packets_dropped(&self, why: packets::Dropped) -> u64 {
        self.core.packets.as_ref().map_or(0, |p| p.dropped(why))
    }

    /// Tunnel bytes carried in tunnel streams (not the packet path) since
    /// start.
    pub fn stream_bytes(&self) -> u64 {
        self.core.load.snapshot().2
    }

    /// This node's id in its tier's presence table.
    pub fn node_id(&self) -> &str {
        &self.core.node_id
    }

    /// Services connected now.
    pub fn services_online(&self) -> usize {
        self.core
            .online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Stops both listeners and closes every connection; on return the
    /// listening sockets are released (a new relay may bind the same ports).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.endpoint.close(0u32.into(), b"relay shutting down");
        for task in &mut self._tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task.finished()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.endpoint.close(0u32.into(), b"relay shutting down");
    }
}
