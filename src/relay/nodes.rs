//! Node-to-node links of a relay tier: how a node forwards a tunnel one
//! hop to the node its service is connected to.
//!
//! Owns: this node's node certificate and one QUIC connection to each
//! other node it has forwarded to ([`NodeLinks`]), opened on first use and
//! shared by every tunnel forwarded to that node (one stream per tunnel).
//!
//! **Authentication (mutual TLS).** Every node of a tier loads a copy of
//! one state directory, so every node holds the tier's CA and its one
//! server certificate. At start a node makes a fresh key, issues itself a
//! certificate from the CA for its node id (`CertificateAuthority::issue_node`)
//! and records its fingerprint in the shared database as a certificate of
//! kind `node` whose subject is the node id. The accepting node admits a
//! [`RelayHello::Node`] only when the TLS client certificate chains to the
//! CA (the listener's verifier) *and* its fingerprint is recorded as the
//! node certificate of the id the hello names; a client or service
//! certificate from the same CA is refused, and `relay cert revoke` ends
//! a node's links like any other certificate (the live watcher re-checks
//! it). The connecting node pins the accepting node's server certificate
//! to the tier's own (`server.pem`, the same on every node), so it forwards
//! only to a holder of the tier's server key. Nothing about the tunnel's
//! end-to-end keys changes: nodes copy ciphertext.
//!
//! **Both paths.** A forwarded tunnel's stream is one stream of the link;
//! its packet path (when both nodes have a packet port and both ends are
//! on QUIC) crosses between the two nodes' packet ports as plain UDP: the
//! forward request, on the link, carries the forwarding node's packet
//! port and the tunnel's hop token (`wire::packet_relay::NodeHop`), so
//! only the two nodes know the token (see `packets` for what it protects
//! against). The link itself carries no datagrams.
//!
//! Takes: [`NodeLinks::link`] (a node id and the address from the presence
//! table). On failure: a link that cannot be opened within
//! [`CONNECT_TIMEOUT`] is an error naming the node (the tunnel is refused
//! `UNAVAILABLE`); a link that has closed is replaced on next use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::info;
use zeroize::Zeroizing;

use super::ca::CaError;
use super::db::Database;
use super::state::RelayKeys;
use super::store::StoreError;
use crate::wire::conn::{ConnError, TransportLimits, read_frame, write_frame};
use crate::wire::pin::{Fingerprint, PinnedServerVerifier};
use crate::wire::relay::{HelloReply, RELAY_ALPN, RelayHello};

/// Time to open a link to another node (handshake and hello).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The certificate kind node certificates are recorded under.
pub const NODE_CERT_KIND: &str = "node";

/// The server name a node asks for (the certificate is pinned, so the
/// name is not what is checked).
const SERVER_NAME: &str = "switchyard-relay-node";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot issue this node's certificate: {0}")]
    Issue(#[from] CaError),
    #[error("cannot make this node's key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot record this node's certificate: {0}")]
    Store(#[from] StoreError),
    #[error("node-to-node TLS: {0}")]
    Tls(String),
    #[error("cannot reach relay node {node} at {addr}: {reason}")]
    Connect {
        node: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("relay node {node} refused this node: {reason}")]
    Refused { node: String, reason: String },
}

/// This node's identity towards the others: its id and node certificate.
pub struct NodeIdentity {
    pub id: String,
    pub cert_der: Vec<u8>,
    key_pkcs8: Zeroizing<Vec<u8>>,
}

impl NodeIdentity {
    /// A fresh key and a certificate for node `id` from the tier's CA,
    /// recorded in `db` so the other nodes admit it.
    pub async fn issue(keys: &RelayKeys, db: &Database, id: &str) -> Result<Self, NodeError> {
        let (csr, key_pkcs8) = crate::tls::new_certificate_request(id)?;
        let cert_der = keys.ca.issue_node(&csr, id)?;
        db.record_cert(&Fingerprint::of(&cert_der).0, NODE_CERT_KIND, id)
            .await?;
        Ok(Self {
            id: id.to_string(),
            cert_der,
            key_pkcs8,
        })
    }

    /// An identity from a certificate and PKCS#8 key made elsewhere (tests
    /// present wrong ones).
    pub fn from_parts(id: &str, cert_der: Vec<u8>, key_pkcs8: Zeroizing<Vec<u8>>) -> Self {
        Self {
            id: id.to_string(),
            cert_der,
            key_pkcs8,
        }
    }

    /// Client configuration of a link: presents this identity, pins the
    /// server to `server_cert_der` (the tier's server certificate).
    pub fn client_config(
        &self,
        server_cert_der: &[u8],
        limits: &TransportLimits,
    ) -> Result<quinn::ClientConfig, NodeError> {
        let tls_err = |e: &dyn std::fmt::Display| NodeError::Tls(e.to_string());
        let pinned = PinnedServerVerifier::new(Some(Fingerprint::of(server_cert_der)));
        let mut tls =
            rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .dangerous()
                .with_custom_certificate_verifier(pinned)
                .with_client_auth_cert(
                    vec![CertificateDer::from(self.cert_der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec())),
                )
                .map_err(|e| tls_err(&e))?;
        tls.alpn_protocols = vec![RELAY_ALPN.to_vec()];
        let mut transport = crate::wire::conn::transport_config(limits);
        transport.ack_frequency_config(Some(link_ack_frequency()));
        crate::wire::conn::quic_client_config(tls, Arc::new(transport)).map_err(|e| tls_err(&e))
    }
}

/// How often the node at the far end of a link this node opened is asked
/// to acknowledge what this node sends (draft-ietf-quic-ack-frequency,
/// which quinn speaks on both ends). A link carries forward requests and
/// the streams of tunnels with an end on TCP (a packet path tunnel's
/// datagrams cross between packet ports, not on the link). By default a
/// receiver acknowledges every second packet at once, which on a
/// request/response exchange is one extra packet to build, send, receive
/// and process per exchange on each node. Here: after 6 packets (fewer
/// than a fresh link's initial window of about 10, so the window never
/// waits on a held-back ACK) or 5 ms.
pub fn link_ack_frequency() -> quinn::AckFrequencyConfig {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(5))
        .max_ack_delay(Some(Duration::from_millis(5)));
    ack
}

/// Opens a link from `endpoint` to the node `node` at `addr` as `me`
/// (`config` from [`NodeIdentity::client_config`]): handshake and hello,
/// within [`CONNECT_TIMEOUT`].
pub async fn connect(
    endpoint: &Endpoint,
    config: quinn::ClientConfig,
    me: &str,
    node: &str,
    addr: SocketAddr,
    max_frame: usize,
) -> Result<Connection, NodeError> {
    let fail = |reason: String| NodeError::Connect {
        node: node.to_string(),
        addr,
        reason,
    };
    let open = async {
        let conn = endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;
        let hello = RelayHello::Node { id: me.to_string() };
        let conn_err = |e: ConnError| fail(e.to_string());
        write_frame(&mut send, &hello, max_frame)
            .await
            .map_err(conn_err)?;
        let _ = send.finish();
        match read_frame::<HelloReply>(&mut recv, max_frame)
            .await
            .map_err(conn_err)?
        {
            Some(HelloReply::Welcome { .. }) => Ok(conn),
            Some(HelloReply::Refused(e)) => Err(NodeError::Refused {
                node: node.to_string(),
                reason: e.message,
            }),
            None => Err(fail("the hello went unanswered".into())),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))?
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// One link per other node, opened on first use and shared.
pub struct NodeLinks {
    me: String,
    endpoint: Endpoint,
    config: quinn::ClientConfig,
    max_frame: usize,
    /// Node id → its link (the slot's lock makes opening single-flight).
    links: Mutex<HashMap<String, Slot>>,
    opened: std::sync::atomic::AtomicU64,
    /// This node's certificate (recorded again if the others forget it).
    fingerprint: [u8; 32],
}

impl NodeLinks {
    /// Links from `endpoint` (the node's own QUIC listener) as `identity`.
    pub fn new(
        identity: &NodeIdentity,
        keys: &RelayKeys,
        endpoint: Endpoint,
        limits: &TransportLimits,
    ) -> Result<Self, NodeError> {
        Ok(Self {
            me: identity.id.clone(),
            config: identity.client_config(&keys.server_cert_der, limits)?,
            endpoint,
            max_frame: limits.max_frame,
            links: Mutex::new(HashMap::new()),
            opened: 0.into(),
            fingerprint: Fingerprint::of(&identity.cert_der).0,
        })
    }

    /// The open link to `node` at `addr`, opening it when there is none
    /// (or the last one closed).
    pub async fn link(&self, node: &str, addr: SocketAddr) -> Result<Connection, NodeError> {
        let slot = {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            // Links to nodes that went away are dropped as others are asked for.
            links.retain(|id, slot| {
                id == node
                    || slot.try_lock().map_or(true, |l| {
                        l.as_ref().is_some_and(|l| l.close_reason().is_none())
                    })
            });
            links.entry(node.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref()
            && link.close_reason().is_none()
        {
            return Ok(link.clone());
        }
        let conn = connect(
            &self.endpoint,
            self.config.clone(),
            &self.me,
            node,
            addr,
            self.max_frame,
        )
        .await?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("switchyard_relay_node_links_opened_total").increment(1);
        info!(%node, %addr, "link to relay node opened");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The fingerprint of this node's certificate.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// Links opened since start.
    pub fn opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }
}
