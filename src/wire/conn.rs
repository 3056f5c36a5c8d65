//! quinn glue: QUIC endpoints with TLS 1.3 and ALPN `switchyard/1`, and
//! framed message I/O on any stream (QUIC's, or `mux`'s over either
//! transport). With `tcp` and `tunnel`, the only modules under `wire` that
//! touch sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{self, Encoded, FrameError, HEADER_LEN, Payload};
use super::liveness::{self, Silence, Verdict};
use super::messages::{ALPN, close_code};
use super::mux::{ChunkRead, ChunkWrite, Conn};
use super::pin::PinnedServerVerifier;
use crate::task::AbortOnDrop;

/// Transport limits both ends apply.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Largest frame body accepted.
    pub max_frame: usize,
    /// Concurrent request streams a peer may open on one connection.
    pub max_concurrent_streams: u32,
    /// A connection with no traffic (keep-alives included) for this long is
    /// dead, whether or not anyone waits on it.
    pub idle_timeout: Duration,
    /// Keep-alive period of the caller's end (servers send none: the
    /// caller's keep-alives and their acknowledgements keep both ends
    /// alive); well under `silence`.
    pub keep_alive: Duration,
    /// A peer silent this long while a call waits on it (or, for a standing
    /// relay connection, at any time) is gone: see [`watch_liveness`].
    pub silence: Duration,
    /// When set, a handshake that gets no answer this long is abandoned
    /// (links set it when they reconnect, so a peer that comes back is
    /// found by the next attempt instead of after QUIC's doubling Initial
    /// retransmissions, ~1, 3, 7 s).
    pub handshake_silence: Option<Duration>,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_concurrent_streams: 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: liveness::KEEP_ALIVE,
            silence: liveness::SILENCE,
            handshake_silence: None,
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
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("{0}")]
    Http(String),
    /// The connection has ended; why.
    #[error("connection closed: {0}")]
    Gone(String),
}

/// Who waits on one connection, and why the liveness watcher closed it.
/// Cheap to clone; every clone shares the count.
#[derive(Clone, Debug, Default)]
pub struct Liveness(Arc<LivenessState>);

#[derive(Debug, Default)]
struct LivenessState {
    /// A standing connection (to a relay): always waited on.
    always: bool,
    waiting: AtomicUsize,
    verdict: OnceLock<String>,
    /// Wakes the watcher when the first waiter arrives (it sleeps, with no
    /// timer, while nobody waits).
    armed: tokio::sync::Notify,
    /// How often the watcher has sampled the connection's statistics.
    samples: AtomicU64,
}

/// Counts one waiter on a connection while alive (see [`Liveness::waiting`]).
#[derive(Debug)]
pub struct Waiting(Arc<LivenessState>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Liveness {
    /// For a connection waited on only while calls are in flight.
    pub fn on_demand() -> Self {
        Self::default()
    }

    /// For a standing connection (a relay's), silent at no time.
    pub fn always() -> Self {
        Self(Arc::new(LivenessState {
            always: true,
            ..Default::default()
        }))
    }

    /// Marks a call in flight until the guard drops. The first waiter
    /// arms the watcher (see [`watch_liveness`]).
    pub fn waiting(&self) -> Waiting {
        if self.0.waiting.fetch_add(1, Ordering::SeqCst) == 0 {
            // A permit is kept if the watcher is not parked yet.
            self.0.armed.notify_one();
        }
        Waiting(self.0.clone())
    }

    /// How many times the watcher has sampled the connection (each sample
    /// reads its statistics): it samples every [`liveness::TICK`] only
    /// while someone waits, so an idle connection's count stays put.
    pub fn samples(&self) -> u64 {
        self.0.samples.load(Ordering::Relaxed)
    }

    fn waited_on(&self) -> bool {
        self.0.always || self.0.waiting.load(Ordering::SeqCst) > 0
    }

    /// Why the watcher closed the connection (`None`: it did not).
    pub fn verdict(&self) -> Option<&str> {
        self.0.verdict.get().map(String::as_str)
    }

    /// `error` as the caller should read it: the watcher's verdict when it
    /// is what closed the connection.
    pub fn explain(&self, error: impl std::fmt::Display) -> String {
        match self.verdict() {
            Some(verdict) => verdict.to_string(),
            None => error.to_string(),
        }
    }
}

/// Watches `conn` (either transport) until it closes: when it has been
/// waited on (see [`Liveness`]) and received nothing for `silence`, closes
/// it (code `PEER_SILENT`), which fails every stream on it at once; the
/// reason is kept in `liveness`. The watcher is armed only while someone
/// waits: it then samples the connection every [`liveness::TICK`]; while
/// nobody waits it sleeps with no timer until the first waiter wakes it (an
/// idle link costs nothing). The task holds the connection open, so its
/// owner keeps the returned handle beside the connection and drops both
/// together.
pub fn watch_liveness(
    conn: impl Into<Conn>,
    liveness: Liveness,
    silence: Duration,
) -> AbortOnDrop<()> {
    let conn: Conn = conn.into();
    AbortOnDrop::new(tokio::spawn(async move {
        let mut watcher = Silence::new(silence);
        let mut tick = tokio::time::interval(liveness::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let closed = conn.closed();
        tokio::pin!(closed);
        loop {
            if !liveness.waited_on() {
                // Disarmed: the next waiter gets a fresh clock.
                watcher.rest();
                tokio::select! {
                    _ = conn.closed() => return,
                    _ = liveness.0.armed.notified() => {}
                }
                // Sample at once: the waiter's clock starts now.
                tick.reset_immediately();
                continue;
            }
            tokio::select! {
                _ = &mut closed => return,
                _ = tick.tick() => {}
            }
            liveness.0.samples.fetch_add(1, Ordering::Relaxed);
            let received = conn.received();
            let verdict =
                watcher.observe(std::time::Instant::now(), received, liveness.waited_on());
            if let Verdict::Silent(quiet) = verdict {
                let reason = format!(
                    "no answer for {:.1} s (the peer stopped, or the network drops its packets)",
                    quiet.as_secs_f64()
                );
                tracing::warn!(peer = %conn.remote_address(), %reason, "closing a silent connection");
                let _ = liveness.0.verdict.set(reason);
                conn.close(close_code::PEER_SILENT, b"peer silent");
                return;
            }
        }
    }))
}

/// The stateless-reset key of an endpoint whose long-term secret is
/// `secret` (its TLS private key, PKCS#8 DER): HKDF-SHA256 (RFC 5869) of
/// it under a label of its own, so the key is the same after a restart
/// and the TLS key itself never keys anything else. A restarted service or
/// relay then answers packets of connections it no longer knows with a
/// stateless reset (RFC 9000 §10.3) the peer accepts, ending them at once.
pub fn reset_key(secret: &[u8]) -> Arc<dyn quinn::crypto::HmacKey> {
    let okm = derive::<32>(secret, b"quic stateless reset key v1");
    Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &okm[..]))
}

/// The key of the server's connection-id generator, from its long-term
/// `secret` like [`reset_key`] (another label): quinn drops packets whose
/// connection id its generator did not make, so a restarted server must
/// recognize the old ids to answer them with a stateless reset.
fn cid_key(secret: &[u8]) -> u64 {
    u64::from_le_bytes(*derive::<8>(secret, b"quic connection id key v1"))
}

/// `N` bytes of HKDF-SHA256 (RFC 5869) of `secret` for `label`.
fn derive<const N: usize>(secret: &[u8], label: &[u8]) -> zeroize::Zeroizing<[u8; N]> {
    use ring::hkdf;
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"switchyard").extract(secret);
    let mut okm = zeroize::Zeroizing::new([0u8; N]);
    // Expanding at most 32 bytes from SHA-256 cannot fail (the limit is
    // 255 * 32).
    if let Ok(material) = prk.expand(&[label], Len(N)) {
        let _ = material.fill(&mut okm[..]);
    }
    okm
}

/// Receive window of one stream (see [`transport_config`]).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// Receive window of a whole connection (QUIC's `receive_window`, HTTP/2's
/// connection window), once its peer has logged in.
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// What a server lets a peer that has not logged in yet send ahead of what
/// it has read: per connection (QUIC and HTTP/2) and per stream (HTTP/2;
/// a QUIC stream's window cannot change after the handshake and is bounded
/// by the connection's). A login grows both to the full windows
/// (`mux::Conn::open_windows`), so the pre-login connections a stranger
/// may hold (256 at the relay) pin 256 x 256 KiB at most, not 256 x 32 MiB.
pub const PRELOGIN_CONNECTION_WINDOW: u32 = 256 * 1024;
/// See [`PRELOGIN_CONNECTION_WINDOW`].
pub const PRELOGIN_STREAM_WINDOW: u32 = 64 * 1024;

/// Largest UDP payload an endpoint accepts (its `max_udp_payload_size`
/// transport parameter, RFC 9000 §18.2) and the most path MTU discovery
/// tries: 6,400 bytes. Packets start at 1,200 bytes and grow only as far
/// as probes get through, so an Ethernet path settles near 1,452 as
/// before, while loopback (MTU 64 KiB, where a broker and its service
/// often run) carries 4.4x fewer packets for bulk output: per-packet work
/// was most of the service's and broker's CPU per byte
/// (`benches/exec_vs_ssh.py`). Not more: quinn hands the kernel up to 10
/// packets per GSO send, and a send over 64 KiB fails with EMSGSIZE, which
/// quinn-udp takes for a lost MTU probe and drops silently (16 KiB
/// packets lost whole batches and stalled links). Costs a receive buffer
/// of 6,400 x 64 GRO segments x 32 per endpoint (13 MiB reserved, touched
/// only as packets arrive).
///
/// Known cost: quinn-proto 0.11.19 gates a closing connection's
/// CONNECTION_CLOSE packet by congestion control (quinn issue #2785, fixed
/// upstream after that release): with frames still pending and
/// `in_flight + MTU >= cwnd` the close is never sent and the peer learns of
/// it only at its idle timeout or liveness watch. A fresh connection's
/// window holds about two 6,400-byte packets, so one MTU probe in flight
/// blocks its close; nothing may rely on a close of a just-opened
/// connection arriving (the broker's token login therefore keeps the
/// connection that asked the relay whose token it is, instead of closing
/// it and dialling again; `tests/relay_security.rs` counts one relay
/// connection per login).
pub const MAX_UDP_PAYLOAD: u16 = 6400;

/// Transport settings both ends use for `limits`.
pub fn transport_config(limits: &TransportLimits) -> TransportConfig {
    let mut t = TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
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
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
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

/// A quinn endpoint on a [`udp_socket`] bound to `addr` (a random
/// stateless-reset key: for callers, whose port changes on a restart).
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<Endpoint> {
    endpoint_with(addr, server, quinn::EndpointConfig::default())
}

/// A server endpoint whose stateless-reset key and connection-id key
/// derive from its long-term `secret` ([`reset_key`]), so both survive
/// restarts.
pub fn keyed_endpoint(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    secret: &[u8],
) -> std::io::Result<Endpoint> {
    let mut config = quinn::EndpointConfig::new(reset_key(secret));
    let key = cid_key(secret);
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(key)));
    endpoint_with(addr, Some(server), config)
}

fn endpoint_with(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    mut config: quinn::EndpointConfig,
) -> std::io::Result<Endpoint> {
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    Endpoint::new(config, server, udp_socket(addr)?, runtime)
}

fn transport(limits: &TransportLimits) -> Arc<TransportConfig> {
    Arc::new(transport_config(limits))
}

/// Transport settings of a server's end: as [`transport_config`], without
/// keep-alives (its callers send them), and with the connection's receive
/// window [`PRELOGIN_CONNECTION_WINDOW`] until its peer logs in
/// (`mux::Conn::open_windows`).
pub fn server_transport_config(limits: &TransportLimits) -> TransportConfig {
    let mut t = transport_config(limits);
    t.keep_alive_interval(None);
    t.receive_window(VarInt::from_u32(PRELOGIN_CONNECTION_WINDOW));
    t
}

/// A QUIC server endpoint presenting `cert_der` (PKCS#8 `key_der`), with
/// a stateless-reset key derived from `key_der` ([`keyed_endpoint`]).
pub fn server_endpoint(
    addr: SocketAddr,
    cert_der: Vec<u8>,
    key_der: &[u8],
    limits: &TransportLimits,
) -> Result<Endpoint, ConnError> {
    let config = server_config(cert_der, key_der, Arc::new(server_transport_config(limits)))?;
    Ok(keyed_endpoint(addr, config, key_der)?)
}

/// Server configuration of the service RPC protocol presenting `cert_der`.
pub fn server_config(
    cert_der: Vec<u8>,
    key_der: &[u8],
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, ConnError> {
    quic_server_config(service_tls(cert_der, key_der, ALPN)?, transport)
}

/// The service's TLS 1.3 configuration presenting `cert_der` (PKCS#8
/// `key_der`) under ALPN `alpn`: the same identity on every transport.
pub fn service_tls(
    cert_der: Vec<u8>,
    key_der: &[u8],
    alpn: &[u8],
) -> Result<rustls::ServerConfig, ConnError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let mut tls = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert_der)], key)
        .map_err(|e| ConnError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    Ok(tls)
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
    send: &mut impl ChunkWrite,
    msg: &T,
    max_frame: usize,
) -> Result<(), ConnError> {
    write_encoded(send, frame::encode(msg, max_frame)?).await
}

/// Writes a frame encoded beforehand (so a sender can refuse a message
/// that is too big before it opens a stream for it).
pub async fn write_encoded(send: &mut impl ChunkWrite, frame: Encoded) -> Result<(), ConnError> {
    // Handed to the transport as they are, not copied into its buffer.
    match frame.payload {
        None => send.write_all(&mut [frame.head.into()]).await,
        Some(payload) => send.write_all(&mut [frame.head.into(), payload]).await,
    }
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly
/// between frames. Not cancel-safe (a read dropped half-way loses what it
/// took): a caller that races reads against other work keeps a
/// [`FrameReader`] instead.
pub async fn read_frame<T: DeserializeOwned + Payload>(
    recv: &mut impl ChunkRead,
    max_frame: usize,
) -> Result<Option<T>, ConnError> {
    FrameReader::default().next(recv, max_frame).await
}

/// Reads frames off one stream and keeps a frame read half-way between
/// calls, so [`FrameReader::next`] is cancel-safe: callers race it against
/// their own input in `select!`, and a read dropped mid-frame resumes
/// where it stopped on the next call (dropping its bytes would misread the
/// rest of the stream, seen as "peer speaks protocol version N"). Needs a
/// cancel-safe `read_chunk_max` (quinn's and HTTP/2's are). Holds only
/// the frame being read ([`frame::Assembler`]); reads never go past the
/// frame's end, so nothing of the next frame is held.
#[derive(Debug, Default)]
pub struct FrameReader {
    header: [u8; HEADER_LEN],
    /// Header bytes read so far.
    filled: usize,
    stage: Stage,
}

/// Where a [`FrameReader`] is in the frame.
#[derive(Debug, Default)]
enum Stage {
    #[default]
    Header,
    Body {
        payload_len: usize,
        body: frame::Assembler,
    },
    Payload {
        body: Bytes,
        payload: frame::Assembler,
    },
}

impl FrameReader {
    /// The next frame; `Ok(None)` when the peer finished the stream
    /// cleanly between frames. After an error the stream is out of step:
    /// read no further.
    pub async fn next<T: DeserializeOwned + Payload>(
        &mut self,
        recv: &mut impl ChunkRead,
        max_frame: usize,
    ) -> Result<Option<T>, ConnError> {
        loop {
            match &mut self.stage {
                Stage::Header => {
                    if !self.read_header(recv).await? {
                        return Ok(None);
                    }
                    let lengths = frame::parse_header(self.header, max_frame)?;
                    self.filled = 0;
                    self.stage = Stage::Body {
                        payload_len: lengths.payload,
                        body: frame::Assembler::new(lengths.body),
                    };
                }
                Stage::Body { body, .. } => {
                    fill(recv, body).await?;
                    if let Stage::Body { payload_len, body } = std::mem::take(&mut self.stage) {
                        self.stage = Stage::Payload {
                            body: body.finish().ok_or(ConnError::Truncated)?,
                            payload: frame::Assembler::new(payload_len),
                        };
                    }
                }
                Stage::Payload { payload, .. } => {
                    fill(recv, payload).await?;
                    if let Stage::Payload { body, payload } = std::mem::take(&mut self.stage) {
                        let payload = payload.finish().ok_or(ConnError::Truncated)?;
                        return Ok(Some(frame::decode(&body, payload)?));
                    }
                }
            }
        }
    }

    /// Completes the header; `false` when the stream ended cleanly before
    /// its first byte.
    async fn read_header(&mut self, recv: &mut impl ChunkRead) -> Result<bool, ConnError> {
        while self.filled < HEADER_LEN {
            match recv.read_chunk_max(HEADER_LEN - self.filled).await? {
                Some(chunk) => {
                    let end = self.filled + chunk.len();
                    self.header[self.filled..end].copy_from_slice(&chunk);
                    self.filled = end;
                }
                None if self.filled == 0 => return Ok(false),
                // A short frame from a peer of another revision is
                // reported as that, not as a cut-off stream.
                None if self.header[0] != frame::PROTOCOL_VERSION => {
                    let got = self.header[0];
                    return Err(FrameError::Version { got }.into());
                }
                None => return Err(ConnError::Truncated),
            }
        }
        Ok(true)
    }
}

/// Reads into `assembler` until it has all it wants ([`frame::Assembler`]:
/// memory follows what arrived, whatever the header claimed; no copy when
/// one chunk holds it all). Cancel-safe: what was read stays in it.
async fn fill(
    recv: &mut impl ChunkRead,
    assembler: &mut frame::Assembler,
) -> Result<(), ConnError> {
    while assembler.missing() > 0 {
        match recv.read_chunk_max(assembler.missing()).await? {
            Some(chunk) => assembler.push(chunk),
            None => return Err(ConnError::Truncated),
        }
    }
    Ok(())
}

/// Client configuration for the relay (ALPN `switchyard-relay/1`): the
/// relay's certificate is verified by name against `roots`; `client_cert`
/// (certificate DER, PKCS#8 key) is presented for mutual TLS.
pub fn relay_client_config(
    roots: rustls::RootCertStore,
    client_cert: Option<(Vec<u8>, &[u8])>,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, ConnError> {
    let tls = relay_client_tls(roots, client_cert, super::relay::RELAY_ALPN)?;
    quic_client_config(tls, transport(limits))
}

/// TLS 1.3 client configuration for a relay (certificate checked against
/// `roots`, optional client certificate `(cert DER, PKCS#8 key DER)`),
/// offering `alpn`: [`super::relay::RELAY_ALPN`] over QUIC, `h2` over TCP
/// ([`super::tcp`]).
pub fn relay_client_tls(
    roots: rustls::RootCertStore,
    client_cert: Option<(Vec<u8>, &[u8])>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, ConnError> {
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
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(key: &dyn quinn::crypto::HmacKey, cid: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; key.signature_len()];
        key.sign(cid, &mut out);
        out
    }

    #[test]
    fn the_reset_key_is_stable_per_secret_and_is_not_the_secret() {
        let cid = [7u8; 8];
        let a1 = reset_key(b"service A's TLS key");
        let a2 = reset_key(b"service A's TLS key");
        let b = reset_key(b"service B's TLS key");
        assert_eq!(
            token(&*a1, &cid),
            token(&*a2, &cid),
            "a restarted endpoint resets what the old one issued"
        );
        assert_ne!(token(&*a1, &cid), token(&*b, &cid));
        // Derived, not the TLS key used as an HMAC key directly.
        let raw = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"service A's TLS key");
        assert_ne!(token(&*a1, &cid), token(&raw, &cid));
    }

    /// A client connection to a fresh server on loopback (both endpoints
    /// and the server's end kept alive by the returned values).
    async fn loopback_pair() -> (Endpoint, Endpoint, quinn::Connection, quinn::Connection) {
        crate::tls::install_crypto_provider();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let limits = TransportLimits::default();
        let server = server_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            certified.cert.der().to_vec(),
            &certified.signing_key.serialize_der(),
            &limits,
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let client = client_endpoint(addr).unwrap();
        let config = client_config(PinnedServerVerifier::new(None), &limits).unwrap();
        let connecting = client.connect_with(config, addr, "localhost").unwrap();
        let accepting = async { server.accept().await.unwrap().await.unwrap() };
        let (conn, server_conn) = tokio::join!(connecting, accepting);
        (server, client, conn.unwrap(), server_conn)
    }

    /// Polls until `cond` holds, failing after 10 s.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_liveness_watcher_samples_only_while_a_call_waits() {
        let (_server, _client, conn, _server_conn) = loopback_pair().await;
        let live = Liveness::on_demand();
        let _watch = watch_liveness(conn.clone(), live.clone(), liveness::SILENCE);
        // Idle (keep-alives flow, nobody waits): over several ticks the
        // watcher reads nothing. The window is an observation period, not
        // a synchronization.
        tokio::time::sleep(liveness::TICK * 6).await;
        assert_eq!(live.samples(), 0, "an idle connection was sampled");

        // A waiting call arms it: it samples every tick.
        let call = live.waiting();
        until("the armed watcher samples", || live.samples() >= 3).await;
        drop(call);
        // Disarmed: at most the tick in progress, then nothing.
        let settled = live.samples() + 1;
        tokio::time::sleep(liveness::TICK * 6).await;
        let after = live.samples();
        assert!(
            after <= settled,
            "{after} samples after the call ended (was {settled})"
        );
        tokio::time::sleep(liveness::TICK * 6).await;
        assert_eq!(
            live.samples(),
            after,
            "an idle connection was sampled again"
        );

        // Armed again by the next call, and the connection is still fine:
        // idle time before the call never counts as silence.
        let call = live.waiting();
        until("re-armed", || live.samples() >= after + 3).await;
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
        assert!(live.verdict().is_none());
        drop(call);
    }

    /// A stream that hands out what was pushed, at most `max` at a time
    /// (cancel-safe, like quinn's and HTTP/2's reads).
    struct Trickle {
        rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
        held: Bytes,
    }

    impl ChunkRead for Trickle {
        async fn read_chunk_max(&mut self, max: usize) -> Result<Option<Bytes>, ConnError> {
            if self.held.is_empty() {
                match self.rx.recv().await {
                    Some(bytes) => self.held = bytes,
                    None => return Ok(None),
                }
            }
            let n = max.min(self.held.len());
            Ok(Some(self.held.split_to(n)))
        }
    }

    #[tokio::test]
    async fn a_frame_reader_dropped_mid_frame_resumes_where_it_stopped() {
        use super::super::messages::Response;
        let frames: Vec<Response> = (0..3u32)
            .map(|i| Response::ExecOutput {
                device: i,
                command: 7,
                stderr: i == 1,
                data: Bytes::from(vec![i as u8; 300 + i as usize]),
            })
            .collect();
        let mut wire = Vec::new();
        for f in &frames {
            let e = frame::encode(f, 4096).unwrap();
            wire.extend_from_slice(&e.head);
            wire.extend_from_slice(&e.payload.unwrap());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut recv = Trickle {
            rx,
            held: Bytes::new(),
        };
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        // One byte at a time; each read is polled once and then dropped
        // (as a `select!` that another branch won drops it) unless the
        // byte completed a frame.
        for byte in wire {
            tx.send(Bytes::from(vec![byte])).unwrap();
            use futures::FutureExt;
            // Unconstrained: tokio's task budget would otherwise make the
            // channel answer "pending" after 128 reads in one poll.
            let read = tokio::task::unconstrained(reader.next::<Response>(&mut recv, 4096));
            if let Some(read) = read.now_or_never() {
                got.push(read.unwrap().expect("a frame"));
            }
        }
        drop(tx);
        let end = reader.next::<Response>(&mut recv, 4096).await;
        assert!(
            matches!(end, Ok(None)),
            "{end:?} after {} frames",
            got.len()
        );
        assert_eq!(format!("{got:?}"), format!("{frames:?}"));
    }

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
