//! quinn glue: QUIC endpoints with TLS 1.3 and ALPN `switchyard/1`, and
//! framed message I/O on QUIC streams. The only module under `wire` that
//! touches sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{self, Encoded, FrameError, HEADER_LEN, Payload};
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

/// Receive window of one stream (see [`transport_config`]).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// Transport settings both ends use for `limits`.
pub fn transport_config(limits: &TransportLimits) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(limits.keep_alive))
        .max_idle_timeout(limits.idle_timeout.try_into().ok())
        // Bulk output: let one stream use a good part of the connection's
        // window (defaults are tuned for many small streams), but no more
        // than quinn keeps as separate packets: past ~2,000 buffered chunks
        // it copies the whole backlog into one buffer, which a bulk reader
        // that falls behind would pay for again and again.
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(32 * 1024 * 1024))
        .send_window(32 * 1024 * 1024);
    t
}

/// Kernel buffer asked for on every UDP socket that carries QUIC. Linux's
/// default (≈208 KiB) holds under a millisecond of a bulk transfer, so a
/// receiver that is descheduled that long drops datagrams, and each drop
/// halves the sender's congestion window. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`.
pub const UDP_BUFFER: usize = 8 * 1024 * 1024;

/// A UDP socket bound to `addr`, with [`UDP_BUFFER`] asked for both ways.
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Best effort: a smaller buffer still works, it only drops sooner.
    let _ = state.set_recv_buffer_size((&socket).into(), UDP_BUFFER);
    let _ = state.set_send_buffer_size((&socket).into(), UDP_BUFFER);
    if let Ok(got) = state.recv_buffer_size((&socket).into())
        && got < UDP_BUFFER
    {
        tracing::debug!(
            bytes = got,
            wanted = UDP_BUFFER,
            "UDP receive buffer capped by the kernel (raise net.core.rmem_max)"
        );
    }
    Ok(socket)
}

/// A quinn endpoint on a [`udp_socket`] bound to `addr`.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<Endpoint> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        udp_socket(addr)?,
        runtime,
    )
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
    Ok(endpoint(addr, Some(config))?)
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
    Ok(endpoint(bind, None)?)
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
pub async fn write_frame<T: Serialize + Payload>(
    send: &mut SendStream,
    msg: &T,
    max_frame: usize,
) -> Result<(), ConnError> {
    write_encoded(send, frame::encode(msg, max_frame)?).await
}

/// Writes a frame encoded beforehand (so a sender can refuse a message
/// that is too big before it opens a stream for it).
pub async fn write_encoded(send: &mut SendStream, frame: Encoded) -> Result<(), ConnError> {
    // Handed to quinn as they are, not copied into its send buffer.
    match frame.payload {
        None => send.write_chunk(frame.head.into()).await?,
        Some(payload) => {
            send.write_all_chunks(&mut [frame.head.into(), payload])
                .await?
        }
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly
/// between frames.
pub async fn read_frame<T: DeserializeOwned + Payload>(
    recv: &mut RecvStream,
    max_frame: usize,
) -> Result<Option<T>, ConnError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match recv.read(&mut header[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(None),
            // A short frame from a peer of another revision is reported as
            // that, not as a cut-off stream.
            None if header[0] != frame::PROTOCOL_VERSION => {
                return Err(FrameError::Version { got: header[0] }.into());
            }
            None => return Err(ConnError::Truncated),
        }
    }
    let lengths = frame::parse_header(header, max_frame)?;
    let body = read_exact(recv, lengths.body).await?;
    let payload = read_exact(recv, lengths.payload).await?;
    Ok(Some(frame::decode(&body, payload.freeze())?))
}

/// The next `len` bytes of `recv` in one buffer, filled from quinn's chunks
/// as they come (bulk payloads are 512 KiB: no zeroing first, one copy).
async fn read_exact(recv: &mut RecvStream, len: usize) -> Result<BytesMut, ConnError> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Err(ConnError::Truncated),
        }
    }
    Ok(buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_sockets_get_the_buffer_the_kernel_allows() {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let state = quinn::udp::UdpSocketState::new((&socket).into()).unwrap();
        let got = state.recv_buffer_size((&socket).into()).unwrap();
        // Linux caps an unprivileged request at rmem_max (and reports twice
        // what it grants, for its own bookkeeping).
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(UDP_BUFFER);
        assert!(
            got >= UDP_BUFFER.min(cap),
            "receive buffer {got} bytes, wanted {} (rmem_max {cap})",
            UDP_BUFFER.min(cap)
        );
    }
}
