//! The TCP transport: the service protocol over HTTP/2 on TLS 1.3 over
//! TCP, for networks that let no UDP through. The only module under
//! `wire` besides `conn` and `tunnel` that touches sockets.
//!
//! * TLS: rustls, TLS 1.3 only, ALPN `h2`; the service presents the same
//!   identity as on its QUIC socket and callers pin it the same way
//!   ([`super::pin::PinnedServerVerifier`]).
//! * Streams: HTTP/2 (the `h2` crate, already under tonic and hyper). Each
//!   bidirectional stream of the protocol is one `POST` to the service's
//!   RPC path ([`RPC_PATH`]): the request body carries the caller's frames,
//!   the response body (status 200, sent at once) the service's. HTTP/2's
//!   per-stream flow control keeps one slow reader from holding up the
//!   others, as QUIC's does; the windows are QUIC's
//!   ([`super::conn::STREAM_WINDOW`] per stream, 32 MiB per connection).
//!   The accepting end starts with small windows
//!   ([`super::conn::PRELOGIN_STREAM_WINDOW`] and
//!   [`super::conn::PRELOGIN_CONNECTION_WINDOW`]) and grows them to the
//!   full ones once its peer has logged in ([`H2Conn::open_windows`]).
//! * Liveness: the caller's end sends an HTTP/2 PING each `keep_alive`, so
//!   [`H2Conn::received`] (bytes read) keeps growing while the peer lives,
//!   and `conn::watch_liveness` works unchanged. Either end closes a
//!   connection that received nothing for `idle_timeout` (a half-open TCP
//!   connection is found this way, or by its FIN at once).
//!
//! Owns (per connection): the TLS stream and the task driving HTTP/2 over
//! it ([`H2Conn`]); the task ends when the last clone of the connection is
//! dropped, or [`H2Conn::close`] is called, and every stream then fails.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{
    CONNECTION_WINDOW, ConnError, PRELOGIN_CONNECTION_WINDOW, PRELOGIN_STREAM_WINDOW,
    STREAM_WINDOW, TransportLimits,
};
use super::mux::Stopped;
use super::pin::PinnedServerVerifier;
use crate::task::AbortOnDrop;

/// ALPN of the TCP transport (RFC 7540 §3.3: HTTP/2 over TLS).
pub const ALPN_H2: &[u8] = b"h2";
/// The HTTP path the service protocol is served at (`rpc_url`'s path).
pub const RPC_PATH: &str = "/rpc";
/// Default TCP port of a service's RPC listener.
pub const DEFAULT_PORT: u16 = 8081;
/// Largest HTTP/2 frame either end accepts (RFC 7540 §6.5.2
/// `SETTINGS_MAX_FRAME_SIZE`; bulk output moves in fewer frames than at
/// the 16 KiB default).
const MAX_H2_FRAME: u32 = 64 * 1024;
/// Largest header block either end accepts (the caller's headers are a
/// stranger's input on the service's listener).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Bytes one stream may queue for sending beyond what its peer has read.
const SEND_BUFFER: usize = 1024 * 1024;
/// How long a closing service end may take to flush what it queued (a
/// refused login's answer) before the socket is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Where a service's TCP RPC listener is, as a person gives it:
/// `https://HOST[:PORT][/PATH]` (port [`DEFAULT_PORT`], path [`RPC_PATH`]
/// when left out). No credentials, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RpcUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Why an `rpc_url` was refused.
#[derive(Debug, thiserror::Error)]
#[error("rpc_url {shown}: {reason} (expected https://HOST:PORT/rpc)")]
pub struct RpcUrlError {
    shown: String,
    reason: &'static str,
}

impl RpcUrl {
    /// Parses and checks an `rpc_url`; the error never echoes credentials.
    pub fn parse(text: &str) -> Result<Self, RpcUrlError> {
        let shown = if text.contains('@') {
            "[redacted]".to_string()
        } else {
            crate::label::tidy_max(text, 128)
        };
        let refuse = |reason| RpcUrlError {
            shown: shown.clone(),
            reason,
        };
        let url = url::Url::parse(text).map_err(|_| refuse("not a URL"))?;
        if url.scheme() != "https" {
            return Err(refuse("the scheme must be https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("credentials do not belong in it"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("no query or fragment"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(refuse("no host")),
        };
        let path = match url.path() {
            "" | "/" => RPC_PATH.to_string(),
            p => p.to_string(),
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            path,
        })
    }

    /// `host:port` (brackets around an IPv6 address), for resolving.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for RpcUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.path)
    }
}

/// What a TCP connection's ends share with its driver task.
#[derive(Debug, Default)]
struct State {
    /// Bytes read from the peer (after TLS), the liveness watcher's sample.
    received: AtomicU64,
    /// Cancelled by [`H2Conn::close`].
    closing: CancellationToken,
    /// Cancelled once the driver has ended (the connection is gone).
    closed: CancellationToken,
    /// Cancelled by [`H2Conn::open_windows`] (the peer has logged in).
    logged_in: CancellationToken,
    /// Sending halves of this connection's streams still held.
    streams: tokio::sync::watch::Sender<usize>,
    reason: OnceLock<String>,
}

impl State {
    fn end(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.closed.cancel();
    }
}

/// Counts one stream's sending half in [`State::streams`] while it lives.
struct StreamHeld(Arc<State>);

impl StreamHeld {
    fn new(state: &Arc<State>) -> Self {
        state.streams.send_modify(|n| *n += 1);
        Self(state.clone())
    }
}

impl Drop for StreamHeld {
    fn drop(&mut self) {
        self.0.streams.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One HTTP/2 connection on TLS/TCP, either end. Cheap to clone.
#[derive(Clone)]
pub struct H2Conn(Arc<Inner>);

struct Inner {
    side: Side,
    state: Arc<State>,
    peer: SocketAddr,
    /// The caller's TLS client certificate (DER), service end only.
    peer_cert: Option<Vec<u8>>,
    _driver: AbortOnDrop<()>,
}

enum Side {
    Client {
        requests: h2::client::SendRequest<Bytes>,
        uri: http::Uri,
    },
    Server {
        incoming: tokio::sync::Mutex<mpsc::Receiver<(H2Send, H2Recv)>>,
    },
}

impl std::fmt::Debug for H2Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Conn")
            .field("peer", &self.0.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl H2Conn {
    fn gone(&self) -> ConnError {
        ConnError::Gone(
            self.0
                .state
                .reason
                .get()
                .cloned()
                .unwrap_or_else(|| "closed".into()),
        )
    }

    /// Opens a stream: a POST whose response is awaited on the first read,
    /// so the request leaves without waiting for a round trip.
    pub async fn open_bi(&self) -> Result<(H2Send, H2Recv), ConnError> {
        let Side::Client { requests, uri } = &self.0.side else {
            return Err(ConnError::Gone("a service end opens no streams".into()));
        };
        if self.is_closed() {
            return Err(self.gone());
        }
        let mut ready = requests
            .clone()
            .ready()
            .await
            .map_err(|e| self.or_gone(e))?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(uri.clone())
            .body(())
            .map_err(|e| ConnError::Http(e.to_string()))?;
        let (response, send) = ready
            .send_request(request, false)
            .map_err(|e| self.or_gone(e))?;
        Ok((H2Send::new(send, &self.0.state), H2Recv::Waiting(response)))
    }

    /// The caller's next stream (the service's end).
    pub async fn accept_bi(&self) -> Result<(H2Send, H2Recv), ConnError> {
        let Side::Server { incoming } = &self.0.side else {
            return Err(ConnError::Gone("a caller's end accepts no streams".into()));
        };
        let mut incoming = incoming.lock().await;
        tokio::select! {
            next = incoming.recv() => next.ok_or_else(|| self.gone()),
            _ = self.0.state.closed.cancelled() => Err(self.gone()),
        }
    }

    /// A connection error as the caller reads it: why the connection
    /// ended, once it has.
    fn or_gone(&self, e: h2::Error) -> ConnError {
        if self.is_closed() {
            self.gone()
        } else {
            e.into()
        }
    }

    /// Closes the connection (the caller's end drops the socket; the
    /// service's flushes what it queued first, at most 1 s).
    /// HTTP/2 has no application close codes: `reason` is kept as why the
    /// connection ended.
    pub fn close(&self, code: u32, reason: &[u8]) {
        let reason = format!(
            "closed by this end ({}, code {code})",
            String::from_utf8_lossy(reason)
        );
        let _ = self.0.state.reason.set(reason);
        self.0.state.closing.cancel();
    }

    /// Waits until the connection has ended; why.
    pub async fn closed(&self) -> String {
        self.0.state.closed.cancelled().await;
        self.0.state.reason.get().cloned().unwrap_or_default()
    }

    /// True once the connection has ended or is closing.
    pub fn is_closed(&self) -> bool {
        self.0.state.closed.is_cancelled() || self.0.state.closing.is_cancelled()
    }

    /// The peer has logged in: the accepting end grows its receive
    /// windows from the pre-login ones to the full ones (a connection
    /// window update and new SETTINGS for every stream). Nothing on the
    /// caller's end, whose windows are full from the start.
    pub fn open_windows(&self) {
        self.0.state.logged_in.cancel();
    }

    /// Resolves once no stream of this connection is held any more (every
    /// sending half dropped), or the connection has ended.
    pub async fn streams_done(&self) {
        let mut held = self.0.state.streams.subscribe();
        tokio::select! {
            _ = held.wait_for(|n| *n == 0) => {}
            _ = self.0.state.closed.cancelled() => {}
        }
    }

    /// Bytes received so far (grows with every PING answer).
    pub fn received(&self) -> u64 {
        self.0.state.received.load(Ordering::Relaxed)
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.0.peer
    }

    /// The certificate the caller presented in TLS (DER; only on the
    /// accepting end, and only when the acceptor asked for one).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.0.peer_cert.as_deref()
    }

    /// True when both are the same connection.
    pub fn same(&self, other: &H2Conn) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The sending half of one HTTP/2 stream.
pub struct H2Send {
    /// Shared with the future [`H2Send::stopped`] returns. h2 keeps one
    /// waker per stream for both, so that future must be polled in the
    /// task that writes (the service's request task does both).
    send: Arc<std::sync::Mutex<h2::SendStream<Bytes>>>,
    _held: StreamHeld,
}

impl H2Send {
    fn new(send: h2::SendStream<Bytes>, state: &Arc<State>) -> Self {
        Self {
            send: Arc::new(std::sync::Mutex::new(send)),
            _held: StreamHeld::new(state),
        }
    }

    fn stream(&self) -> std::sync::MutexGuard<'_, h2::SendStream<Bytes>> {
        self.send.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `data`, waiting for stream and connection credit.
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), ConnError> {
        while !data.is_empty() {
            let mut credit = self.stream().capacity();
            if credit == 0 {
                self.stream().reserve_capacity(data.len());
                credit = match std::future::poll_fn(|cx| self.stream().poll_capacity(cx)).await {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ConnError::Gone("the stream was reset".into())),
                };
            }
            if credit == 0 {
                continue;
            }
            let part = data.split_to(credit.min(data.len()));
            self.stream().send_data(part, false)?;
        }
        Ok(())
    }

    /// Ends the stream cleanly. A stream the peer has already reset (it
    /// answered in full and dropped the rest, RFC 9113 §8.1) needs no end:
    /// that is not an error, as QUIC's `finish` after `STOP_SENDING` is
    /// not. (The caller's thread may be descheduled between its last write
    /// and this, long enough for a quick answer to come back.)
    pub fn finish(&mut self) -> Result<(), ConnError> {
        let mut stream = self.stream();
        match stream.send_data(Bytes::new(), true) {
            Ok(()) => Ok(()),
            // Polled only once the stream is dead: the waker it replaces
            // (`stopped`'s) has nothing left to wait for.
            Err(_)
                if stream
                    .poll_reset(&mut Context::from_waker(std::task::Waker::noop()))
                    .is_ready() =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves when the peer resets the stream (it went away), or the
    /// stream ends otherwise. Poll it in the writing task (see `send`).
    pub fn stopped(&mut self) -> Stopped {
        let send = self.send.clone();
        Box::pin(async move {
            let _ = std::future::poll_fn(|cx| {
                send.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .poll_reset(cx)
            })
            .await;
        })
    }
}

impl H2Send {
    /// Poll form of [`H2Send::write`] for `AsyncWrite`: sends what credit
    /// allows of `buf` (at least one byte), copied.
    pub fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut stream = self.stream();
        loop {
            let credit = stream.capacity();
            if credit > 0 {
                let n = credit.min(buf.len());
                stream
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(std::io::Error::other)?;
                return Poll::Ready(Ok(n));
            }
            stream.reserve_capacity(buf.len());
            match std::task::ready!(stream.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                None => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the stream was reset",
                    )));
                }
            }
        }
    }

    /// Resets the stream (the peer sees it cancelled, not ended).
    pub fn reset(&mut self) {
        self.stream().send_reset(h2::Reason::CANCEL);
    }
}

impl H2Recv {
    /// Poll form of [`H2Recv::read_chunk`] for `AsyncRead`: copies what is
    /// received into `buf`; nothing added means the stream's end.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match self {
                Self::Waiting(response) => {
                    let response = std::task::ready!(Pin::new(response).poll(cx))
                        .map_err(std::io::Error::other)?;
                    if response.status() != http::StatusCode::OK {
                        return Poll::Ready(Err(std::io::Error::other(format!(
                            "the service answered HTTP {}",
                            response.status()
                        ))));
                    }
                    *self = Self::Open {
                        body: response.into_body(),
                        held: Bytes::new(),
                    };
                }
                Self::Open { body, held } => {
                    if !held.is_empty() {
                        let n = buf.remaining().min(held.len());
                        buf.put_slice(&held.split_to(n));
                        return Poll::Ready(Ok(()));
                    }
                    match std::task::ready!(body.poll_data(cx)) {
                        None => return Poll::Ready(Ok(())),
                        Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                        Some(Ok(chunk)) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            *held = chunk;
                        }
                    }
                }
            }
        }
    }
}

/// The receiving half of one HTTP/2 stream.
pub enum H2Recv {
    /// A caller's stream before the service's response headers came.
    Waiting(h2::client::ResponseFuture),
    Open {
        body: h2::RecvStream,
        /// Received and not yet handed out.
        held: Bytes,
    },
}

impl H2Recv {
    /// The next bytes, at most `max`; `Ok(None)` at the stream's end.
    /// Flow-control credit is given back as bytes are taken from HTTP/2's
    /// buffer, so it holds at most one window per stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ConnError> {
        loop {
            match self {
                Self::Waiting(response) => {
                    let response = response.await?;
                    if response.status() != http::StatusCode::OK {
                        return Err(ConnError::Http(format!(
                            "the service answered HTTP {} (is the rpc_url's path right?)",
                            response.status()
                        )));
                    }
                    *self = Self::Open {
                        body: response.into_body(),
                        held: Bytes::new(),
                    };
                }
                Self::Open { body, held } => {
                    if !held.is_empty() {
                        let n = max.min(held.len());
                        return Ok(Some(held.split_to(n)));
                    }
                    match body.data().await {
                        None => return Ok(None),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(chunk)) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            *held = chunk;
                        }
                    }
                }
            }
        }
    }
}

/// Counts the bytes read through it (the liveness sample).
struct Counted<T> {
    inner: T,
    state: Arc<State>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.state
                .received
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// TLS 1.3 client configuration (ALPN `h2`) that authenticates the service
/// with `verifier`, as the QUIC side does.
pub fn client_tls(verifier: Arc<PinnedServerVerifier>) -> rustls::ClientConfig {
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_H2.to_vec()];
    tls
}

/// A socket TLS and HTTP/2 can run over: TCP, or a tunnel through a proxy.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The caller's end: TLS (server name `host`, certificate checked by
/// `tls`'s verifier) over `io`, then HTTP/2; streams go to `url`'s path.
/// `limits` give windows, keep-alive and idle timeout.
pub async fn connect<S: Io>(
    io: S,
    peer: SocketAddr,
    url: &RpcUrl,
    tls: Arc<rustls::ClientConfig>,
    limits: &TransportLimits,
) -> Result<H2Conn, ConnError> {
    let name = match url.host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(url.host.clone())
            .map_err(|_| ConnError::Tls(format!("{} is not a valid host name", url.host)))?,
    };
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, io)
        .await?;
    let state = Arc::new(State::default());
    let io = Counted {
        inner: stream,
        state: state.clone(),
    };
    let (requests, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_H2_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(SEND_BUFFER)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let ping = connection.ping_pong();
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(url.authority())
        .path_and_query(url.path.as_str())
        .build()
        .map_err(|e| ConnError::Http(e.to_string()))?;
    let driver = drive_client(connection, ping, state.clone(), limits.clone());
    Ok(H2Conn(Arc::new(Inner {
        side: Side::Client { requests, uri },
        state,
        peer,
        peer_cert: None,
        _driver: AbortOnDrop::new(tokio::spawn(driver)),
    })))
}

/// TLS 1.3 server configuration (ALPN `h2`) presenting the service's
/// identity.
pub fn server_tls(cert_der: Vec<u8>, key_der: &[u8]) -> Result<rustls::ServerConfig, ConnError> {
    super::conn::service_tls(cert_der, key_der, ALPN_H2)
}

/// The service's end of a new TCP connection: TLS handshake, then the
/// HTTP/2 preface. The caller bounds both with its login deadline.
pub async fn accept(
    tcp: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    limits: &TransportLimits,
) -> Result<H2Conn, ConnError> {
    let peer = tcp.peer_addr()?;
    let _ = tcp.set_nodelay(true);
    let stream = tls.accept(tcp).await?;
    let peer_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let state = Arc::new(State::default());
    let io = Counted {
        inner: stream,
        state: state.clone(),
    };
    let connection = h2::server::Builder::new()
        .initial_window_size(PRELOGIN_STREAM_WINDOW)
        .initial_connection_window_size(PRELOGIN_CONNECTION_WINDOW)
        .max_frame_size(MAX_H2_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(SEND_BUFFER)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .handshake::<_, Bytes>(io)
        .await?;
    let queue = (limits.max_concurrent_streams as usize).clamp(1, 1024);
    let (tx, rx) = mpsc::channel(queue);
    let driver = drive_server(connection, tx, state.clone(), limits.idle_timeout);
    Ok(H2Conn(Arc::new(Inner {
        side: Side::Server {
            incoming: tokio::sync::Mutex::new(rx),
        },
        state,
        peer,
        peer_cert,
        _driver: AbortOnDrop::new(tokio::spawn(driver)),
    })))
}

/// Resolves when nothing has been read for `limit`, with why.
async fn idle(state: &State, limit: Duration) -> String {
    let mut tick = tokio::time::interval(super::liveness::TICK);
    let mut seen = state.received.load(Ordering::Relaxed);
    let mut since = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = state.received.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= limit {
            return format!("nothing received for {:.0} s", limit.as_secs_f64());
        }
    }
}

async fn drive_client<T: Io>(
    connection: h2::client::Connection<Counted<T>, Bytes>,
    ping: Option<h2::PingPong>,
    state: Arc<State>,
    limits: TransportLimits,
) {
    let keep_alive = async {
        let Some(mut ping) = ping else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(limits.keep_alive).await;
            if ping.ping(h2::Ping::opaque()).await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    let reason = tokio::select! {
        ended = connection => match ended {
            Ok(()) => "closed by the service".to_string(),
            Err(e) => e.to_string(),
        },
        () = keep_alive => String::new(),
        why = idle(&state, limits.idle_timeout) => why,
        _ = state.closing.cancelled() => String::new(),
    };
    state.end(reason);
}

async fn drive_server<T: Io>(
    mut connection: h2::server::Connection<Counted<T>, Bytes>,
    incoming: mpsc::Sender<(H2Send, H2Recv)>,
    state: Arc<State>,
    idle_timeout: Duration,
) {
    let serve = async {
        // Pre-login windows until the peer has logged in; then the full
        // ones (new SETTINGS may be refused while earlier ones await their
        // acknowledgement: tried again a moment later).
        let mut windows_open = false;
        let mut retry_at = None;
        loop {
            let grow = async {
                if windows_open {
                    return std::future::pending().await;
                }
                state.logged_in.cancelled().await;
                if let Some(at) = retry_at {
                    tokio::time::sleep_until(at).await;
                }
            };
            let next = tokio::select! {
                next = connection.accept() => next,
                () = grow => {
                    connection.set_target_window_size(CONNECTION_WINDOW);
                    match connection.set_initial_window_size(STREAM_WINDOW) {
                        Ok(()) => windows_open = true,
                        Err(_) => {
                            retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(20));
                        }
                    }
                    continue;
                }
            };
            let (request, mut respond) = match next {
                None => return "closed by the caller".to_string(),
                Some(Err(e)) => return e.to_string(),
                Some(Ok(next)) => next,
            };
            if request.method() != http::Method::POST || request.uri().path() != RPC_PATH {
                let mut answer = http::Response::new(());
                *answer.status_mut() = http::StatusCode::NOT_FOUND;
                let _ = respond.send_response(answer, true);
                continue;
            }
            let Ok(send) = respond.send_response(http::Response::new(()), false) else {
                continue;
            };
            let pair = (
                H2Send::new(send, &state),
                H2Recv::Open {
                    body: request.into_body(),
                    held: Bytes::new(),
                },
            );
            // Full only when the caller opens streams faster than they are
            // served (HTTP/2 caps them at `max_concurrent_streams`): the
            // dropped stream is reset, the connection goes on.
            let _ = incoming.try_send(pair);
        }
    };
    let reason = tokio::select! {
        why = serve => why,
        why = idle(&state, idle_timeout) => why,
        _ = state.closing.cancelled() => String::new(),
    };
    if state.closing.is_cancelled() {
        // Let a last answer (a refused login's) reach the caller.
        connection.graceful_shutdown();
        let _ = tokio::time::timeout(
            CLOSE_FLUSH,
            std::future::poll_fn(|cx| connection.poll_closed(cx)),
        )
        .await;
    }
    state.end(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_urls_are_parsed_with_defaults_and_refused_with_reasons() {
        let url = RpcUrl::parse("https://svc.example:9443/rpc").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("svc.example", 9443));
        assert_eq!(url.to_string(), "https://svc.example:9443/rpc");
        let url = RpcUrl::parse("https://10.0.0.1").unwrap();
        assert_eq!((url.port, url.path.as_str()), (DEFAULT_PORT, RPC_PATH));
        let url = RpcUrl::parse("https://[::1]:8081/rpc").unwrap();
        assert_eq!(url.authority(), "[::1]:8081");
        for bad in [
            "http://h:8081/rpc",
            "https://h/rpc?x=1",
            "not a url",
            "https://:8081/rpc",
        ] {
            assert!(RpcUrl::parse(bad).is_err(), "{bad} accepted");
        }
        let e = RpcUrl::parse("https://alice:hunter2@h/rpc").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
