//! quinn glue: QUIC endpoints with TLS 1.3 and ALPN `switchyard/1`, and
//! framed message I/O on QUIC streams. The only module under `wire` that
//! touches sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{self, FrameError, HEADER_LEN};
use super::messages::ALPN;
use super::pin::PinnedServerVerifier;

/// Transport limits both ends apply.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Largest frame body accepted.
    pub max_frame: usize,
    /// Concurrent request streams a peer may open on one connection.
    pub max_concurrent_streams: u32,
    /// A connection with no traffic (keep-alives included) for this long is dead.
    pub idle_timeout: Duration,
    /// Keep-alive period; well under `idle_timeout`.
    pub keep_alive: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_concurrent_streams: 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream was closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot open UDP socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Transport settings both ends use for `limits`.
pub fn transport_config(limits: &TransportLimits) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(limits.keep_alive))
        .max_idle_timeout(limits.idle_timeout.try_into().ok())
        // Bulk output: let one stream use a good part of the connection's
        // window (defaults are tuned for many small streams).
        .stream_receive_window(VarInt::from_u32(8 * 1024 * 1024))
        .receive_window(VarInt::from_u32(32 * 1024 * 1024))
        .send_window(32 * 1024 * 1024);
    t
}

fn transport(limits: &TransportLimits) -> Arc<TransportConfig> {
    Arc::new(transport_config(limits))
}

/// A QUIC server endpoint presenting `cert_der` (PKCS#8 `key_der`).
pub fn server_endpoint(
    addr: SocketAddr,
    cert_der: Vec<u8>,
    key_der: &[u8],
    limits: &TransportLimits,
) -> Result<Endpoint, ConnError> {
    let config = server_config(cert_der, key_der, transport(limits))?;
    Ok(Endpoint::server(config, addr)?)
}

/// Server configuration of the service RPC protocol presenting `cert_der`.
pub fn server_config(
    cert_der: Vec<u8>,
    key_der: &[u8],
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, ConnError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let mut tls = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert_der)], key)
        .map_err(|e| ConnError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    quic_server_config(tls, transport)
}

/// Wraps a rustls server configuration for QUIC.
pub fn quic_server_config(
    tls: rustls::ServerConfig,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, ConnError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| ConnError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// Wraps a rustls client configuration for QUIC.
pub fn quic_client_config(
    tls: rustls::ClientConfig,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, ConnError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| ConnError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// A client endpoint on an ephemeral port of `target`'s address family.
pub fn client_endpoint(target: SocketAddr) -> Result<Endpoint, ConnError> {
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0"
            .parse()
            .map_err(|_| ConnError::Tls("bad bind address".into()))?
    } else {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| ConnError::Tls("bad bind address".into()))?
    };
    Ok(Endpoint::client(bind)?)
}

/// Client configuration that authenticates the server with `verifier`.
pub fn client_config(
    verifier: Arc<PinnedServerVerifier>,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, ConnError> {
    client_config_with(verifier, transport(limits))
}

/// [`client_config`] with explicit transport settings.
pub fn client_config_with(
    verifier: Arc<PinnedServerVerifier>,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, ConnError> {
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quic_client_config(tls, transport)
}

/// Writes one message as a frame.
pub async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    msg: &T,
    max_frame: usize,
) -> Result<(), ConnError> {
    let bytes = frame::encode(msg, max_frame)?;
    // Handed to quinn as is, not copied into its send buffer.
    send.write_chunk(bytes.into()).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly
/// between frames.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    max_frame: usize,
) -> Result<Option<T>, ConnError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match recv.read(&mut header[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(None),
            None => return Err(ConnError::Truncated),
        }
    }
    let len = frame::parse_header(header, max_frame)?;
    // Filled from quinn's chunks as they come (no zeroing of a body that
    // is about to be overwritten; bulk frames are 256 KiB).
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => return Err(ConnError::Truncated),
        }
    }
    Ok(Some(frame::decode(&body)?))
}

/// Client configuration for the relay (ALPN `switchyard-relay/1`): the
/// relay's certificate is verified by name against `roots`; `client_cert`
/// (certificate DER, PKCS#8 key) is presented for mutual TLS.
pub fn relay_client_config(
    roots: rustls::RootCertStore,
    client_cert: Option<(Vec<u8>, &[u8])>,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, ConnError> {
    let builder = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_root_certificates(roots);
    let mut tls = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
            )
            .map_err(|e| ConnError::Tls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![super::relay::RELAY_ALPN.to_vec()];
    quic_client_config(tls, transport(limits))
}
