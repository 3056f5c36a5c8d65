//! A SOCKS5 proxy's handshake on one accepted connection: the I/O around
//! the sans-IO [`socks5`](super::socks5) parsers.
//!
//! Bounded: the whole handshake (greeting, RFC 1929 login, request) must
//! end within [`HANDSHAKE_TIMEOUT`], and no more than one message
//! ([`MAX_MESSAGE`] bytes) is ever buffered. A client that breaks the
//! protocol, offers no acceptable method, gives a wrong username or
//! password, or asks for an IP address gets the reply the RFCs define (or
//! none, before the request) and its connection is closed; nothing else is
//! touched. The password is compared in constant time and never logged; a
//! username reaches logs only through `label::tidy_max`.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::socks5::{
    Credentials, Host, MAX_MESSAGE, METHOD_UNACCEPTABLE, Parsed, ProtocolError, Reply, auth_reply,
    method_reply, parse_credentials, parse_greeting, parse_request, reply,
};
use crate::broker::error::BrokerError;
use crate::broker::link::LinkError;
use crate::secret::Secret;
use crate::wire::messages::ErrorCode;

/// Longest a client may take from connecting to its complete request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a reply to the request may take to write.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The username and password a proxy asks for (RFC 1929).
pub struct ProxyLogin {
    username: String,
    password: Secret,
}

impl ProxyLogin {
    /// Both must be 1-255 bytes (RFC 1929's field sizes).
    pub fn new(username: String, password: Secret) -> Result<Self, BrokerError> {
        let fits = |n: usize| (1..=255).contains(&n);
        if !fits(username.len()) || !fits(password.expose().len()) {
            return Err(BrokerError::InvalidArgument(
                "a SOCKS5 username and password must each be 1-255 bytes (RFC 1929)".into(),
            ));
        }
        crate::label::check("a SOCKS5 username", &username)
            .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        Ok(Self { username, password })
    }

    /// The username (shown by `forward list`).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether `given` matches, in time independent of where they differ.
    fn matches(&self, given: &Credentials) -> bool {
        let user = self.username.as_bytes().ct_eq(&given.username);
        let password = self.password.expose().as_bytes().ct_eq(&given.password);
        (user & password).into()
    }
}

/// Why a SOCKS5 client was turned away before its connection was opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("SOCKS5 protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error(
        "the client offered no method this proxy accepts ({})",
        if *.password_required { "it requires username/password" } else { "it takes no authentication" }
    )]
    NoMethod { password_required: bool },
    #[error("wrong SOCKS5 username or password (username {user:?})")]
    BadLogin { user: String },
    #[error(
        "CONNECT to the IP address {ip}: this proxy takes device names as host names \
         (curl --socks5-hostname, socks5h://), resolved by the service"
    )]
    IpAddress { ip: IpAddr },
    #[error("CONNECT to port 0 of {device}")]
    PortZero { device: String },
    #[error("CONNECT to {device:?}: {reason}")]
    BadName { device: String, reason: String },
    #[error("the client closed its connection during the SOCKS5 handshake")]
    Closed,
    #[error("no complete SOCKS5 request within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    #[error("reading the SOCKS5 handshake: {0}")]
    Io(#[from] io::Error),
}

/// A client's `CONNECT`, checked.
pub struct Request {
    pub device: String,
    pub port: u16,
    /// Bytes the client sent after its request without waiting for the
    /// reply (optimistic data), to go to the device first.
    pub early: Vec<u8>,
}

/// One message at a time from the client, at most [`MAX_MESSAGE`] bytes
/// buffered.
struct Reader<'a, S> {
    stream: &'a mut S,
    buf: [u8; MAX_MESSAGE],
    filled: usize,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    async fn next<T>(&mut self, parse: fn(&[u8]) -> Parsed<T>) -> Result<T, HandshakeError> {
        loop {
            if let Some((message, used)) = parse(&self.buf[..self.filled])? {
                self.buf.copy_within(used..self.filled, 0);
                self.filled -= used;
                return Ok(message);
            }
            if self.filled == self.buf.len() {
                // Cannot happen: every message fits, and parsers answer as
                // soon as one is complete.
                return Err(io::Error::other("SOCKS5 message over its maximum size").into());
            }
            match self.stream.read(&mut self.buf[self.filled..]).await? {
                0 => return Err(HandshakeError::Closed),
                n => self.filled += n,
            }
        }
    }
}

/// Runs the handshake on `stream` within [`HANDSHAKE_TIMEOUT`]: the
/// client's `CONNECT` to a device, or why it was turned away (already told
/// to the client where the RFC has a reply for it).
pub async fn accept<S>(
    stream: &mut S,
    login: Option<&ProxyLogin>,
) -> Result<Request, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_within(stream, login, HANDSHAKE_TIMEOUT).await
}

async fn accept_within<S>(
    stream: &mut S,
    login: Option<&ProxyLogin>,
    limit: Duration,
) -> Result<Request, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(limit, handshake(stream, login))
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

async fn handshake<S>(stream: &mut S, login: Option<&ProxyLogin>) -> Result<Request, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut r = Reader {
        stream,
        buf: [0; MAX_MESSAGE],
        filled: 0,
    };
    let offered = r.next(parse_greeting).await?;
    let method = offered.choose(login.is_some());
    r.stream.write_all(&method_reply(method)).await?;
    if method == METHOD_UNACCEPTABLE {
        return Err(HandshakeError::NoMethod {
            password_required: login.is_some(),
        });
    }
    if let Some(login) = login {
        let given = r.next(parse_credentials).await?;
        let ok = login.matches(&given);
        r.stream.write_all(&auth_reply(ok)).await?;
        if !ok {
            return Err(HandshakeError::BadLogin {
                user: crate::label::tidy_max(&String::from_utf8_lossy(&given.username), 64),
            });
        }
    }
    let connect = match r.next(parse_request).await {
        Ok(connect) => connect,
        Err(HandshakeError::Protocol(e)) => {
            if let Some(code) = e.reply() {
                r.stream.write_all(&reply(code)).await?;
            }
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    let refused = match connect.host {
        Host::Ip(ip) => (
            Reply::AddressTypeNotSupported,
            HandshakeError::IpAddress { ip },
        ),
        Host::Name(device) => match crate::label::check("a device name", &device) {
            Err(e) => (
                Reply::HostUnreachable,
                HandshakeError::BadName {
                    device: crate::label::tidy_max(&device, 64),
                    reason: e.to_string(),
                },
            ),
            Ok(()) if connect.port == 0 => {
                (Reply::GeneralFailure, HandshakeError::PortZero { device })
            }
            Ok(()) => {
                return Ok(Request {
                    device,
                    port: connect.port,
                    early: r.buf[..r.filled].to_vec(),
                });
            }
        },
    };
    r.stream.write_all(&reply(refused.0)).await?;
    Err(refused.1)
}

/// Tells the client how its `CONNECT` ended (within a bound: a client that
/// does not read is given up on).
pub async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, code: Reply) -> io::Result<()> {
    tokio::time::timeout(REPLY_TIMEOUT, async {
        stream.write_all(&reply(code)).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client does not read"))?
}

/// The reply for a connection the service or the link refused.
pub fn reply_for(error: &BrokerError) -> Reply {
    let remote = matches!(error, BrokerError::Link(LinkError::Remote(_)));
    match error.code() {
        ErrorCode::PermissionDenied | ErrorCode::Unauthenticated => Reply::NotAllowed,
        ErrorCode::NotFound => Reply::HostUnreachable,
        // The service could not connect to the device's port.
        ErrorCode::Unavailable if remote => Reply::ConnectionRefused,
        // The link to the service is down.
        ErrorCode::Unavailable => Reply::NetworkUnreachable,
        ErrorCode::DeadlineExceeded => Reply::TtlExpired,
        _ => Reply::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        client: &[u8],
        login: Option<&ProxyLogin>,
    ) -> (Result<Request, HandshakeError>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        theirs.write_all(client).await.unwrap();
        theirs.shutdown().await.unwrap();
        let result = accept(&mut ours, login).await;
        drop(ours);
        let mut back = Vec::new();
        theirs.read_to_end(&mut back).await.unwrap();
        (result, back)
    }

    fn login() -> ProxyLogin {
        ProxyLogin::new("alice".into(), Secret::new("s3cret")).unwrap()
    }

    #[tokio::test]
    async fn a_device_name_with_a_login_and_early_data() {
        let mut msg = vec![5, 2, 0, 2, 1, 5];
        msg.extend_from_slice(b"alice");
        msg.push(6);
        msg.extend_from_slice(b"s3cret");
        msg.extend_from_slice(&[5, 1, 0, 3, 3]);
        msg.extend_from_slice(b"r-1");
        msg.extend_from_slice(&[0, 80]);
        msg.extend_from_slice(b"GET /");
        let (r, back) = run(&msg, Some(&login())).await;
        let r = r.unwrap();
        assert_eq!((r.device.as_str(), r.port), ("r-1", 80));
        assert_eq!(r.early, b"GET /");
        assert_eq!(back, [5, 2, 1, 0], "method 02, then login accepted");
    }

    #[tokio::test]
    async fn refusals_get_their_replies() {
        let (r, back) = run(&[5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80], None).await;
        assert!(
            matches!(r, Err(HandshakeError::IpAddress { .. })),
            "{:?}",
            r.err()
        );
        assert_eq!(back, [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
        let mut bad = vec![5, 1, 2, 1, 5];
        bad.extend_from_slice(b"alice");
        bad.extend_from_slice(&[5, b'w', b'r', b'o', b'n', b'g']);
        let (r, back) = run(&bad, Some(&login())).await;
        assert!(matches!(r, Err(HandshakeError::BadLogin { .. })));
        assert_eq!(back, [5, 2, 1, 1], "login refused");
        // A client without username/password to a proxy that wants one.
        let (r, back) = run(&[5, 1, 0], Some(&login())).await;
        assert!(matches!(r, Err(HandshakeError::NoMethod { .. })));
        assert_eq!(back, [5, 0xFF]);
        // BIND: 07.
        let (r, back) = run(&[5, 1, 0, 5, 2, 0, 1, 1, 1, 1, 1, 0, 1], None).await;
        assert!(matches!(r, Err(HandshakeError::Protocol(_))));
        assert_eq!(back[2..4], [5, 7]);
        // Not SOCKS at all: closed without a reply.
        let (r, back) = run(b"GET / HTTP/1.1\r\n\r\n", None).await;
        assert!(matches!(
            r,
            Err(HandshakeError::Protocol(ProtocolError::Version(b'G')))
        ));
        assert!(back.is_empty());
        // Cut short.
        let (r, _) = run(&[5, 1], None).await;
        assert!(matches!(r, Err(HandshakeError::Closed)));
    }

    #[tokio::test]
    async fn a_silent_client_is_given_up_on() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        // Half a greeting, then nothing.
        theirs.write_all(&[5]).await.unwrap();
        let r = accept_within(&mut ours, None, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(HandshakeError::Timeout)));
    }

    #[test]
    fn logins_are_bounded() {
        assert!(ProxyLogin::new(String::new(), Secret::new("x")).is_err());
        assert!(ProxyLogin::new("u".into(), Secret::new("x".repeat(256))).is_err());
        assert!(ProxyLogin::new("u\n".into(), Secret::new("x")).is_err());
        let l = login();
        let wrong = Credentials {
            username: b"alice".to_vec(),
            password: zeroize::Zeroizing::new(b"s3cre".to_vec()),
        };
        assert!(!l.matches(&wrong));
    }
}
