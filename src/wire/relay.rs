//! Messages of the relay protocol (ALPN `switchyard-relay/1`).
//!
//! Brokers and enrolled services both hold one QUIC connection to the relay.
//! Its first bidirectional stream carries a [`RelayHello`] and a
//! [`HelloReply`]:
//!
//! * a **client** (a broker's cloud login) proves its identity with a bearer
//!   token, or with the client certificate it presented in the TLS handshake;
//! * a **service** proves its serial with the certificate the relay issued
//!   at enrollment (mTLS; required).
//!
//! A service keeps that stream open as its control stream: a
//! [`ServiceNotice`] (its goodbye when it stops) answered by a
//! [`NoticeReply`].
//!
//! After that a client opens one stream per [`RelayRequest`]. For
//! `OpenTunnel`, the relay opens a stream on the service's connection,
//! sends it a [`TunnelOffer`], answers the client `TunnelOpen`, and from
//! then on copies bytes between the two streams untouched: those bytes are
//! the broker↔service QUIC packets of an end-to-end encrypted connection
//! (see `wire::tunnel`), which the relay cannot read.

use serde::{Deserialize, Serialize};

use super::packet_relay::{NodeHop, PacketPath};

use super::frame::Payload;
use super::messages::WireError;
use crate::secret::Secret;

/// ALPN protocol id of the relay's QUIC listener.
pub const RELAY_ALPN: &[u8] = b"switchyard-relay/1";

/// First message on a connection to the relay.
#[derive(Clone, Serialize, Deserialize)]
pub enum RelayHello {
    /// A broker's cloud login. `token: None` means "use my TLS client
    /// certificate".
    Client { token: Option<String> },
    /// An enrolled service (identified by its TLS client certificate).
    /// `advertise` is the direct RPC address it tells callers about.
    Service { advertise: Option<String> },
    /// Another node of the relay's tier, `id` as in the presence table
    /// (identified by its node certificate; see `relay::nodes`). It then
    /// opens one stream per [`RelayRequest::Forward`].
    Node { id: String },
}

impl std::fmt::Debug for RelayHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client { token } => f
                .debug_struct("Client")
                .field("token", &token.as_ref().map(|_| "[redacted]"))
                .finish(),
            Self::Service { advertise } => f
                .debug_struct("Service")
                .field("advertise", advertise)
                .finish(),
            Self::Node { id } => f.debug_struct("Node").field("id", id).finish(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    /// Authenticated as `identity` (an email for clients, a serial for
    /// services) until `expires_unix` (a token's expiry; `None` for
    /// certificates).
    Welcome {
        identity: String,
        expires_unix: Option<u64>,
    },
    Refused(WireError),
}

/// A client's request on a later stream.
#[derive(Clone, Serialize, Deserialize)]
pub enum RelayRequest {
    /// Replace the connection's credentials (a refreshed access token).
    Reauth { token: String },
    /// Bridge this stream to service `serial`.
    OpenTunnel { serial: String },
    /// A signed statement, for service `serial`, of who this caller is.
    Assert { serial: String },
    /// A one-time password that enrolls a service as `serial`.
    ServiceOtp { serial: String },
    /// Sign a client certificate for this identity (DER PKCS#10 request;
    /// the private key stays with the caller).
    IssueClientCert {
        // Bytes, not a sequence of integers: the same bincode layout,
        // decoded within the codec's bound on byte fields.
        #[serde(with = "serde_bytes")]
        csr_der: Vec<u8>,
    },
    /// A long-lived access token for this identity.
    CreateToken { lifetime_secs: u64 },
    /// From another node of the tier only: bridge this stream to service
    /// `serial`, connected to this node, for `caller` (whom the asking
    /// node authenticated). Answered as `OpenTunnel` is, with a packet
    /// path only when `packets` is given: the asking node's packet port
    /// (on the address of its link) and the tunnel's hop token, with which
    /// the tunnel's datagrams cross between the two nodes' packet ports as
    /// plain UDP; never forwarded again (one hop).
    Forward {
        serial: String,
        caller: String,
        packets: Option<NodeHop>,
    },
}

impl std::fmt::Debug for RelayRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl RelayRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Reauth { .. } => "reauth",
            Self::OpenTunnel { .. } => "open_tunnel",
            Self::Assert { .. } => "assert",
            Self::ServiceOtp { .. } => "service_otp",
            Self::IssueClientCert { .. } => "issue_client_cert",
            Self::CreateToken { .. } => "create_token",
            Self::Forward { .. } => "forward",
        }
    }
}

/// What the relay knows of an enrolled service, for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFacts {
    /// SHA-256 fingerprint of the service's own TLS identity, published at
    /// enrollment: the end-to-end pin.
    pub fingerprint: [u8; 32],
    /// The direct RPC address the service advertises, if any.
    pub advertise: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub enum RelayReply {
    Ok,
    /// The stream is now a tunnel to the service: its packets go through
    /// the relay's packet port when `packet` is given, else inside the
    /// stream.
    TunnelOpen {
        facts: ServiceFacts,
        packet: Option<PacketPath>,
    },
    Assertion {
        token: String,
        facts: ServiceFacts,
    },
    Otp {
        otp: String,
        expires_unix: u64,
    },
    ClientCert {
        #[serde(with = "serde_bytes")]
        cert_der: Vec<u8>,
        #[serde(with = "serde_bytes")]
        ca_der: Vec<u8>,
    },
    Token {
        id: String,
        token: String,
        expires_unix: u64,
    },
    Error(WireError),
}

impl std::fmt::Debug for RelayReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("Ok"),
            Self::TunnelOpen { facts, packet } => f
                .debug_struct("TunnelOpen")
                .field("facts", facts)
                .field("packet", packet)
                .finish(),
            Self::Assertion { facts, .. } => f.debug_tuple("Assertion").field(facts).finish(),
            Self::Otp { .. } => f.write_str("Otp"),
            Self::ClientCert { .. } => f.write_str("ClientCert"),
            Self::Token { id, .. } => f.debug_tuple("Token").field(id).finish(),
            Self::Error(e) => f.debug_tuple("Error").field(e).finish(),
        }
    }
}

/// Sent by the relay on a stream it opens to a service: a caller wants a
/// tunnel. The service may read who asks; it authenticates the caller
/// itself, end to end, from the assertion the caller presents inside.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelOffer {
    pub tunnel: u64,
    pub caller: String,
    /// The tunnel's packet path through the relay, when it has one.
    pub packet: Option<PacketPath>,
}

/// What a service may tell the relay on its control stream: the hello
/// stream, which a service of this version keeps open after the relay's
/// [`HelloReply::Welcome`] (so does the relay, for services).
///
/// Compatibility: a relay that does not know a notice (a decode error: an
/// unknown variant) finishes its side of the control stream, and so does
/// an older relay right after its welcome; a service reads that end (or a
/// stopped stream) as "not understood" and goes on without the answer. A
/// service that finishes the control stream (an older one does so right
/// after its hello) just sends no notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceNotice {
    /// The service is stopping: take it offline now (new tunnels refused,
    /// presence cleared for the whole tier) instead of when its connection
    /// ends. Tunnels already open keep running until the service closes
    /// the connection (after draining its calls), then end.
    Goodbye,
}

/// The relay's answer to a [`ServiceNotice`], on the control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeReply {
    /// To `Goodbye`: the serial is offline on this relay and its presence
    /// row is gone (on a tier, as far as the database write succeeded).
    Offline,
}

/// Claims of a relay-signed assertion (a JWT, EdDSA). `aud` is the serial of
/// the one service it is good for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
}

/// Claims of an access or refresh token the relay signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub iss: String,
    pub sub: String,
    /// Token id, for revocation.
    pub jti: String,
    /// `access`, `refresh` or `api` (a long-lived access token).
    pub kind: String,
    pub exp: u64,
    pub iat: u64,
}

// The relay's HTTPS API bodies (JSON).

/// Relay facts a client needs before its first QUIC connection.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WellKnown {
    pub issuer: String,
    pub quic: String,
    /// The relay's TLS/TCP listener (HTTP/2 streams, `wire::tcp`) for
    /// callers that cannot use QUIC; absent when it has none (an older
    /// relay, or `--tcp-listen off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
}

/// Serde for a [`Secret`] field: a plain JSON string on the wire, moved
/// into the `Secret` when read (so the only copy is zeroized on drop) and
/// redacted in `Debug`.
pub mod secret_field {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::Secret;

    pub fn serialize<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// A service's enrollment request. `Debug` shows the one-time password as
/// `[redacted]`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollServiceRequest {
    #[serde(with = "secret_field")]
    pub otp: Secret,
    /// Base64 DER PKCS#10 request for the relay connection's key.
    pub csr: String,
    /// Fingerprint of the service's own TLS identity (the end-to-end pin).
    pub fingerprint: String,
    pub advertise: Option<String>,
}

/// What an enrolled service keeps.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollServiceResponse {
    pub serial: String,
    /// Base64 DER certificate for the relay connection.
    pub cert: String,
    /// Base64 DER CA certificate.
    pub ca: String,
    /// Base64 raw Ed25519 key that verifies caller assertions.
    pub assertion_key: String,
    pub issuer: String,
    pub quic: String,
    /// In a relay tier: the QUIC addresses of the tier's other live nodes,
    /// which the service falls back to when `quic` is lost (absent from a
    /// single relay's answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

impl Payload for RelayHello {}
impl Payload for HelloReply {}
impl Payload for RelayRequest {}
impl Payload for RelayReply {}
impl Payload for TunnelOffer {}
impl Payload for ServiceNotice {}
impl Payload for NoticeReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrollment_request_never_shows_its_otp() {
        let request = EnrollServiceRequest {
            otp: Secret::new("otp-plaintext-4242"),
            csr: "Y3Ny".into(),
            fingerprint: "ab".into(),
            advertise: None,
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("otp-plaintext-4242"), "{debug}");
        // The wire form still carries it, and reads back.
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.contains("\"otp\":\"otp-plaintext-4242\""), "{json}");
        let back: EnrollServiceRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.otp.expose(), "otp-plaintext-4242");
    }
}
