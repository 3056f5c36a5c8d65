//! SOCKS5 server side, sans-IO: the messages a client sends before its
//! connection is carried (RFC 1928 method negotiation and request, RFC 1929
//! username/password), parsed from bytes, and the replies as bytes.
//!
//! Only what a proxy to devices needs: the `CONNECT` command, methods
//! "no authentication" (00) and "username/password" (02). Every message is
//! at most [`MAX_MESSAGE`] bytes (its lengths are single bytes), so a
//! parser never needs more than that buffered; each returns `Ok(None)`
//! while the message is incomplete, and an error as soon as a byte is
//! wrong (the connection is then closed without waiting for more).

use std::net::IpAddr;

use zeroize::Zeroizing;

/// SOCKS protocol version 5 (RFC 1928 §3).
pub const VERSION: u8 = 5;
/// Method 00: no authentication required.
pub const METHOD_NONE: u8 = 0x00;
/// Method 02: username/password (RFC 1929).
pub const METHOD_PASSWORD: u8 = 0x02;
/// Method FF: no acceptable method; the client must close.
pub const METHOD_UNACCEPTABLE: u8 = 0xFF;
/// RFC 1929 sub-negotiation version.
pub const AUTH_VERSION: u8 = 1;
/// The largest client message: an RFC 1929 request (1 + 1 + 255 + 1 + 255).
pub const MAX_MESSAGE: usize = 513;

const CMD_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// A client message that breaks the protocol (the connection is closed,
/// after the reply the RFC defines for it, if any: [`ProtocolError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not SOCKS version 5 (version byte {0:#04x})")]
    Version(u8),
    #[error("the client offered no authentication method")]
    NoMethods,
    #[error("username/password sub-negotiation version {0:#04x}, not 1 (RFC 1929)")]
    AuthVersion(u8),
    #[error("command {0:#04x} is not supported (only CONNECT, 01)")]
    Command(u8),
    #[error("reserved byte {0:#04x}, not 00")]
    Reserved(u8),
    #[error("unknown address type {0:#04x}")]
    AddressType(u8),
    #[error("the host name is not UTF-8")]
    NameNotUtf8,
}

impl ProtocolError {
    /// The reply a request-phase error gets before the connection closes
    /// (RFC 1928 §6); `None` for errors before the request.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Self::Command(_) => Some(Reply::CommandNotSupported),
            Self::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            Self::Reserved(_) | Self::NameNotUtf8 => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

/// The methods a client offered in its greeting (RFC 1928 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offered {
    pub none: bool,
    pub password: bool,
}

impl Offered {
    /// The method to answer with: username/password when the proxy asks for
    /// one (and the client offers it), else none; [`METHOD_UNACCEPTABLE`]
    /// when the client offers neither that fits.
    pub fn choose(self, password_required: bool) -> u8 {
        match (password_required, self.password, self.none) {
            (true, true, _) => METHOD_PASSWORD,
            (false, _, true) => METHOD_NONE,
            _ => METHOD_UNACCEPTABLE,
        }
    }
}

/// An RFC 1929 username and password as the client sent them.
pub struct Credentials {
    pub username: Vec<u8>,
    pub password: Zeroizing<Vec<u8>>,
}

/// Where a `CONNECT` asks to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A domain name (address type 03): here, a device name.
    Name(String),
    /// An IPv4 or IPv6 address (types 01, 04).
    Ip(IpAddr),
}

/// A `CONNECT` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub host: Host,
    pub port: u16,
}

/// Reply codes (RFC 1928 §6, field REP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// A parse result: the message and the bytes it took, or `None` until more
/// bytes arrive.
pub type Parsed<T> = Result<Option<(T, usize)>, ProtocolError>;

/// The greeting: `VER NMETHODS METHODS...`.
pub fn parse_greeting(buf: &[u8]) -> Parsed<Offered> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(ProtocolError::Version(version));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(ProtocolError::NoMethods);
    }
    let end = 2 + usize::from(n);
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    let mut offered = Offered::default();
    for &m in methods {
        match m {
            METHOD_NONE => offered.none = true,
            METHOD_PASSWORD => offered.password = true,
            _ => {}
        }
    }
    Ok(Some((offered, end)))
}

/// The RFC 1929 request: `VER ULEN UNAME PLEN PASSWD`.
pub fn parse_credentials(buf: &[u8]) -> Parsed<Credentials> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != AUTH_VERSION {
        return Err(ProtocolError::AuthVersion(version));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    let user_end = 2 + usize::from(ulen);
    let Some(&plen) = buf.get(user_end) else {
        return Ok(None);
    };
    let end = user_end + 1 + usize::from(plen);
    let Some(password) = buf.get(user_end + 1..end) else {
        return Ok(None);
    };
    Ok(Some((
        Credentials {
            username: buf[2..user_end].to_vec(),
            password: Zeroizing::new(password.to_vec()),
        },
        end,
    )))
}

/// The request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub fn parse_request(buf: &[u8]) -> Parsed<Connect> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(ProtocolError::Version(version));
    }
    let Some(&command) = buf.get(1) else {
        return Ok(None);
    };
    if command != CMD_CONNECT {
        return Err(ProtocolError::Command(command));
    }
    let Some(&reserved) = buf.get(2) else {
        return Ok(None);
    };
    if reserved != 0 {
        return Err(ProtocolError::Reserved(reserved));
    }
    let Some(&atyp) = buf.get(3) else {
        return Ok(None);
    };
    let (addr_len, addr_start) = match atyp {
        ATYP_IPV4 => (4, 4),
        ATYP_IPV6 => (16, 4),
        ATYP_NAME => match buf.get(4) {
            Some(&n) => (usize::from(n), 5),
            None => return Ok(None),
        },
        other => return Err(ProtocolError::AddressType(other)),
    };
    let addr_end = addr_start + addr_len;
    let Some(port) = buf.get(addr_end..addr_end + 2) else {
        return Ok(None);
    };
    let addr = &buf[addr_start..addr_end];
    let host = match atyp {
        ATYP_NAME => Host::Name(
            std::str::from_utf8(addr)
                .map_err(|_| ProtocolError::NameNotUtf8)?
                .to_string(),
        ),
        ATYP_IPV4 => Host::Ip(IpAddr::from(
            <[u8; 4]>::try_from(addr).map_err(|_| ProtocolError::AddressType(atyp))?,
        )),
        _ => Host::Ip(IpAddr::from(
            <[u8; 16]>::try_from(addr).map_err(|_| ProtocolError::AddressType(atyp))?,
        )),
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Some((Connect { host, port }, addr_end + 2)))
}

/// The method selection message: `VER METHOD`.
pub fn method_reply(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// The RFC 1929 status: 00 success, 01 failure (the server then closes).
pub fn auth_reply(ok: bool) -> [u8; 2] {
    [AUTH_VERSION, if ok { 0 } else { 1 }]
}

/// A reply to the request, with the bound address given as `0.0.0.0:0`
/// (the proxy's own end is of no use to a client of a tunnel).
pub fn reply(code: Reply) -> [u8; 10] {
    [VERSION, code as u8, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of a complete message is incomplete, never an error.
    fn prefixes_wait<T>(msg: &[u8], parse: fn(&[u8]) -> Parsed<T>) {
        for i in 0..msg.len() {
            assert!(matches!(parse(&msg[..i]), Ok(None)), "prefix of {i} bytes");
        }
    }

    #[test]
    fn greeting() {
        let msg = [5, 3, 0x00, 0x80, 0x02, 0xAA];
        prefixes_wait(&msg[..5], parse_greeting);
        let (offered, used) = parse_greeting(&msg).unwrap().unwrap();
        assert_eq!(used, 5, "the next byte is not the greeting's");
        assert_eq!(
            offered,
            Offered {
                none: true,
                password: true
            }
        );
        assert_eq!(offered.choose(true), METHOD_PASSWORD);
        assert_eq!(offered.choose(false), METHOD_NONE);
        let only_none = Offered {
            none: true,
            password: false,
        };
        assert_eq!(only_none.choose(true), METHOD_UNACCEPTABLE);
        assert_eq!(
            parse_greeting(&[4, 1, 0]).err(),
            Some(ProtocolError::Version(4))
        );
        assert_eq!(
            parse_greeting(b"GET / HTTP/1.1").err(),
            Some(ProtocolError::Version(b'G'))
        );
        assert_eq!(
            parse_greeting(&[5, 0]).err(),
            Some(ProtocolError::NoMethods)
        );
    }

    #[test]
    fn credentials() {
        let msg = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        prefixes_wait(&msg, parse_credentials);
        let (c, used) = parse_credentials(&msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        assert_eq!(c.username, b"bob");
        assert_eq!(&c.password[..], b"pw");
        assert_eq!(
            parse_credentials(&[5, 1]).err(),
            Some(ProtocolError::AuthVersion(5))
        );
        // Empty fields parse (and then simply do not match).
        let (c, _) = parse_credentials(&[1, 0, 0]).unwrap().unwrap();
        assert!(c.username.is_empty() && c.password.is_empty());
    }

    #[test]
    fn requests() {
        let mut msg = vec![5, 1, 0, 3, 5];
        msg.extend_from_slice(b"web-1");
        msg.extend_from_slice(&8080u16.to_be_bytes());
        prefixes_wait(&msg, parse_request);
        let (c, used) = parse_request(&msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        assert_eq!(
            c,
            Connect {
                host: Host::Name("web-1".into()),
                port: 8080
            }
        );
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0, 22];
        prefixes_wait(&v4, parse_request);
        let (c, _) = parse_request(&v4).unwrap().unwrap();
        assert_eq!(c.host, Host::Ip("10.0.0.1".parse().unwrap()));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&[0; 15]);
        v6.extend_from_slice(&[1, 0, 80]);
        let (c, _) = parse_request(&v6).unwrap().unwrap();
        assert_eq!(c.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(c.port, 80);
        // BIND and UDP ASSOCIATE are refused with reply 07.
        let e = parse_request(&[5, 2, 0, 1]).unwrap_err();
        assert_eq!(e, ProtocolError::Command(2));
        assert_eq!(e.reply(), Some(Reply::CommandNotSupported));
        let e = parse_request(&[5, 1, 0, 9]).unwrap_err();
        assert_eq!(e.reply(), Some(Reply::AddressTypeNotSupported));
        assert_eq!(
            parse_request(&[5, 1, 7]).err(),
            Some(ProtocolError::Reserved(7))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 1, 0xFF, 0, 80]).err(),
            Some(ProtocolError::NameNotUtf8)
        );
    }

    #[test]
    fn replies() {
        assert_eq!(method_reply(METHOD_NONE), [5, 0]);
        assert_eq!(auth_reply(true), [1, 0]);
        assert_eq!(auth_reply(false), [1, 1]);
        assert_eq!(reply(Reply::NotAllowed), [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn no_message_needs_more_than_the_maximum() {
        let mut longest = vec![1, 255];
        longest.extend_from_slice(&[b'u'; 255]);
        longest.push(255);
        longest.extend_from_slice(&[b'p'; 255]);
        assert_eq!(longest.len(), MAX_MESSAGE);
        assert!(parse_credentials(&longest).unwrap().is_some());
    }
}
