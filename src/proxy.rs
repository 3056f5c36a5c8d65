//! Outbound TCP through an HTTP proxy: `CONNECT` (RFC 9110 §9.3.6) with
//! optional Basic authentication (RFC 7617), and which proxy applies to a
//! destination (`HTTPS_PROXY`/`https_proxy` and `NO_PROXY`/`no_proxy`, as
//! curl reads them).
//!
//! The exchange itself is sans-IO ([`connect_request`], [`parse_answer`]);
//! [`Proxy::connect`] runs it on a TCP socket. What comes back is the raw
//! tunnel: TLS to the destination runs inside it, so the proxy sees only
//! ciphertext (and the destination's `host:port`).
//!
//! **Invariant:** the proxy password is a [`Secret`]: never logged, never
//! in an error or `status` (a proxy is shown as `HOST:PORT`).

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::secret::Secret;

/// Default port of a proxy URL without one (curl's).
pub const DEFAULT_PORT: u16 = 1080;
/// Largest answer head a proxy may send before the tunnel starts.
const MAX_ANSWER: usize = 16 * 1024;

/// An HTTP proxy: where it is, and the Basic credentials it wants.
#[derive(Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<Secret>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.address())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Why a proxy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy URL {shown}: {reason} (expected http://[USER@]HOST:PORT)")]
    Url { shown: String, reason: &'static str },
    #[error("cannot reach the proxy {proxy}: {source}")]
    Unreachable {
        proxy: String,
        source: std::io::Error,
    },
    #[error("the proxy {proxy} refused CONNECT to {target}: HTTP {status} {reason}{hint}")]
    Refused {
        proxy: String,
        target: String,
        status: u16,
        reason: String,
        hint: &'static str,
    },
    #[error("the proxy {proxy} gave no HTTP answer to CONNECT to {target}: {what}")]
    Garbled {
        proxy: String,
        target: String,
        what: &'static str,
    },
}

impl Proxy {
    /// A proxy from its URL: `http://[USER[:PASSWORD]@]HOST[:PORT]` (port
    /// [`DEFAULT_PORT`] when left out; a bare `HOST:PORT` is taken as
    /// http, as curl does). `password`, when given, replaces one in the
    /// URL. The error never echoes credentials.
    pub fn parse(text: &str, password: Option<Secret>) -> Result<Self, ProxyError> {
        let shown = if text.contains('@') {
            "[redacted]".to_string()
        } else {
            crate::label::tidy_max(text, 128)
        };
        let refuse = |reason| ProxyError::Url {
            shown: shown.clone(),
            reason,
        };
        let full = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let url = url::Url::parse(&full).map_err(|_| refuse("not a URL"))?;
        if url.scheme() != "http" {
            return Err(refuse("only http:// proxies are supported"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("a proxy URL has no path or query"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(refuse("no host")),
        };
        let username = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(percent_decode);
        let password = password.or_else(|| url.password().map(|p| Secret::new(percent_decode(p))));
        if password.is_some() && username.is_none() {
            return Err(refuse("a password needs a user name"));
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            username,
            password,
        })
    }

    /// `HOST:PORT`, how the proxy is shown (never its credentials).
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The same proxy for HTTPS requests made with `reqwest` (`CONNECT`,
    /// Basic credentials when it has them).
    pub fn reqwest(&self) -> Result<reqwest::Proxy, reqwest::Error> {
        let proxy = reqwest::Proxy::https(format!("http://{}", self.address()))?;
        Ok(match (&self.username, &self.password) {
            (Some(user), Some(password)) => proxy.basic_auth(user, password.expose()),
            (Some(user), None) => proxy.basic_auth(user, ""),
            _ => proxy,
        })
    }

    /// A TCP connection to `host:port` through the proxy: connects to it,
    /// asks `CONNECT`, and returns the socket once it answers 2xx. A
    /// refusal names the proxy and its answer.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let proxy = self.address();
        let target = authority(host, port);
        let unreachable = |source| ProxyError::Unreachable {
            proxy: proxy.clone(),
            source,
        };
        let mut socket = TcpStream::connect(&proxy).await.map_err(unreachable)?;
        let _ = socket.set_nodelay(true);
        let request = connect_request(&target, self.username.as_deref(), self.password.as_ref());
        socket
            .write_all(request.expose().as_bytes())
            .await
            .map_err(unreachable)?;
        // Byte by byte up to the blank line: whatever follows it is the
        // tunnel's, and must stay in the socket.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_ANSWER {
                return Err(ProxyError::Garbled {
                    proxy,
                    target,
                    what: "its answer's head is over 16 KiB",
                });
            }
            let mut byte = [0u8; 1];
            match socket.read(&mut byte).await.map_err(unreachable)? {
                0 => {
                    return Err(ProxyError::Garbled {
                        proxy,
                        target,
                        what: "it closed the connection",
                    });
                }
                _ => head.push(byte[0]),
            }
        }
        match parse_answer(&head) {
            Some((status, _)) if (200..300).contains(&status) => Ok(socket),
            Some((status, reason)) => Err(ProxyError::Refused {
                proxy,
                target,
                status,
                reason,
                hint: hint(status),
            }),
            None => Err(ProxyError::Garbled {
                proxy,
                target,
                what: "its answer is not HTTP/1.x",
            }),
        }
    }
}

/// A URL's user or password as typed (`%40` is `@`; a `+` stays a `+`).
fn percent_decode(text: &str) -> String {
    let escaped = text.replace('+', "%2B");
    url::form_urlencoded::parse(format!("x={escaped}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// What a refusal most likely means.
fn hint(status: u16) -> &'static str {
    match status {
        // tinyproxy answers a bad Proxy-Authorization with 401.
        401 | 407 => " (the proxy wants credentials, or refused the ones given)",
        403 => " (the proxy does not allow this destination or port)",
        502 | 504 => " (the proxy could not reach the destination)",
        _ => "",
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `CONNECT` request for `target` (`host:port`), with Basic
/// credentials when a user name is given (a `Secret`: it holds the
/// password).
pub fn connect_request(target: &str, username: Option<&str>, password: Option<&Secret>) -> Secret {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = username {
        let pass = password.map(|p| p.expose()).unwrap_or("");
        let token = zeroize::Zeroizing::new(format!("{user}:{pass}"));
        let encoded = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    Secret::new(request)
}

/// The status and reason phrase (tidied: a stranger's text) of an answer
/// head; `None` when it is not HTTP/1.x.
pub fn parse_answer(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse::<u16>().ok()?;
    if !(100..600).contains(&status) {
        return None;
    }
    let reason = crate::label::tidy_max(parts.next().unwrap_or(""), 100);
    Some((status, reason))
}

/// The proxy the environment names for HTTPS destinations, as curl reads
/// it: `https_proxy`, else `HTTPS_PROXY`; with the hosts `no_proxy` (else
/// `NO_PROXY`) exempts. `getenv` is `std::env::var` in daemons (a
/// parameter, so tests need not touch the process environment).
pub fn from_env(
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Option<(Proxy, NoProxy)>, ProxyError> {
    let url = getenv("https_proxy")
        .or_else(|| getenv("HTTPS_PROXY"))
        .filter(|u| !u.is_empty());
    let Some(url) = url else { return Ok(None) };
    let no_proxy = getenv("no_proxy")
        .or_else(|| getenv("NO_PROXY"))
        .unwrap_or_default();
    Ok(Some((Proxy::parse(&url, None)?, NoProxy::parse(&no_proxy))))
}

/// Which proxy outbound TCP uses by default (the config's `[proxy]`, else
/// the environment's), and the hosts exempt from it.
#[derive(Debug, Clone, Default)]
pub struct ProxyRule {
    pub proxy: Option<Proxy>,
    pub no_proxy: NoProxy,
    /// Per destination (`[proxy.domains]`): a host, its subdomains
    /// included, and the proxy for it, which wins over `proxy` and
    /// `no_proxy`.
    pub domains: Vec<(String, Proxy)>,
}

impl ProxyRule {
    /// The proxy for a connection to `host`, if any: its domain's, else
    /// the default one unless `no_proxy` exempts the host.
    pub fn for_host(&self, host: &str) -> Option<&Proxy> {
        let by_domain = self
            .domains
            .iter()
            .find(|(domain, _)| NoProxy::parse(domain).matches(host));
        match by_domain {
            Some((_, proxy)) => Some(proxy),
            None => self.proxy.as_ref().filter(|_| !self.no_proxy.matches(host)),
        }
    }
}

/// Hosts no proxy is used for, as curl reads `NO_PROXY`: a comma-separated
/// list of host names (each also matching its subdomains; a leading dot
/// is ignored) and addresses (matched exactly), or `*` for every host.
/// Case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<String>);

impl NoProxy {
    pub fn parse(text: &str) -> Self {
        Self(
            text.split(',')
                .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                .map(|e| e.trim_start_matches('[').trim_end_matches(']').to_string())
                .filter(|e| !e.is_empty())
                .collect(),
        )
    }

    /// True when `host` (a name or an address) is exempt.
    pub fn matches(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.0.iter().any(|entry| {
            entry == "*"
                || *entry == host
                || (host.parse::<std::net::IpAddr>().is_err()
                    && host.ends_with(entry.as_str())
                    && host[..host.len() - entry.len()].ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_keep_credentials_out_of_display_and_errors() {
        let p = Proxy::parse("http://bob:s%40cret@proxy.corp:3128", None).unwrap();
        assert_eq!(p.address(), "proxy.corp:3128");
        assert_eq!(p.password.as_ref().unwrap().expose(), "s@cret");
        assert!(!format!("{p:?}").contains("s@cret"));
        let p = Proxy::parse("proxy.corp", None).unwrap();
        assert_eq!(p.address(), "proxy.corp:1080");
        let e = Proxy::parse("https://bob:hunter2@proxy:3128", None).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(Proxy::parse("socks5://proxy:1080", None).is_err());
    }

    #[test]
    fn connect_requests_carry_basic_credentials_only_when_given() {
        let plain = connect_request("svc:8081", None, None);
        assert_eq!(
            plain.expose(),
            "CONNECT svc:8081 HTTP/1.1\r\nHost: svc:8081\r\n\r\n"
        );
        let auth = connect_request(
            "svc:8081",
            Some("Aladdin"),
            Some(&Secret::new("open sesame")),
        );
        // RFC 7617's own example.
        assert!(
            auth.expose()
                .contains("Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n")
        );
    }

    #[test]
    fn answers_are_parsed_and_their_reason_tidied() {
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some((200, "Connection established".into()))
        );
        assert_eq!(
            parse_answer(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"),
            Some((407, "Proxy Authentication Required".into()))
        );
        assert_eq!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        let (_, reason) = parse_answer(b"HTTP/1.1 403 no\x1b[2J\r\n\r\n").unwrap();
        assert!(!reason.contains('\x1b'));
    }

    #[test]
    fn no_proxy_matches_as_curl_does() {
        let n = NoProxy::parse("localhost, .corp.example,10.0.0.1,[::1]");
        assert!(n.matches("localhost"));
        assert!(n.matches("svc.corp.example"));
        assert!(n.matches("corp.example"));
        assert!(!n.matches("notcorp.example"));
        assert!(n.matches("10.0.0.1"));
        assert!(!n.matches("10.0.0.12"));
        assert!(n.matches("::1"));
        assert!(!n.matches("example.com"));
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(!NoProxy::parse("").matches("anything"));
    }

    #[test]
    fn a_domain_proxy_wins_for_its_host_and_subdomains_only() {
        let rule = ProxyRule {
            proxy: Some(Proxy::parse("http://default:3128", None).unwrap()),
            no_proxy: NoProxy::parse("relay.example,internal"),
            domains: vec![(
                "relay.example".into(),
                Proxy::parse("http://eu:3128", None).unwrap(),
            )],
        };
        let via = |host| rule.for_host(host).map(Proxy::address);
        assert_eq!(via("relay.example").as_deref(), Some("eu:3128"));
        assert_eq!(via("node1.relay.example").as_deref(), Some("eu:3128"));
        assert_eq!(via("other.example").as_deref(), Some("default:3128"));
        assert_eq!(via("svc.internal"), None);
        assert_eq!(via("xrelay.example").as_deref(), Some("default:3128"));
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(from_env(env(&[])).unwrap().is_none());
        let (p, n) = from_env(env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("NO_PROXY", "internal"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.address(), "lower:3128");
        assert!(n.matches("svc.internal"));
    }
}
