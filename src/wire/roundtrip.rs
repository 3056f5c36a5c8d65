//! Property tests: every wire message, encoded as a frame (or, for the
//! relay's HTTPS bodies, as JSON) and decoded, is the message it was; and
//! decoding never allocates past what the codec's bound allows.
//!
//! Messages without `PartialEq` (those holding secrets) are compared by
//! their encoding, which carries every field.

use bytes::Bytes;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{self, HEADER_LEN, Payload};
use super::messages::*;
use super::packet_relay::{PacketPath, TunnelId};
use super::relay::*;

fn text() -> impl Strategy<Value = String> {
    // Any characters, multi-byte ones included.
    "\\PC{0,12}"
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::InvalidArgument),
        Just(ErrorCode::Unauthenticated),
        Just(ErrorCode::PermissionDenied),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::ResourceExhausted),
        Just(ErrorCode::Unavailable),
        Just(ErrorCode::DeadlineExceeded),
        Just(ErrorCode::Cancelled),
        Just(ErrorCode::Internal),
    ]
}

fn wire_error() -> impl Strategy<Value = WireError> {
    (code(), text()).prop_map(|(c, m)| WireError::new(c, m))
}

fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        (text(), text())
            .prop_map(|(username, password)| Credentials::Password { username, password }),
        text().prop_map(|token| Credentials::Assertion { token }),
    ]
}

fn auth_request() -> impl Strategy<Value = AuthRequest> {
    (credentials(), text()).prop_map(|(credentials, client)| AuthRequest {
        credentials,
        client,
    })
}

fn auth_response() -> impl Strategy<Value = AuthResponse> {
    prop_oneof![
        text().prop_map(|service| AuthResponse::Accepted { service }),
        wire_error().prop_map(AuthResponse::Rejected),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Inventory),
        (
            prop::collection::vec(text(), 0..4),
            prop::collection::vec(text(), 0..4),
            any::<Option<u64>>()
        )
            .prop_map(|(devices, commands, timeout_ms)| Request::Exec {
                devices,
                commands,
                timeout_ms
            }),
        (text(), any::<u16>(), any::<u16>())
            .prop_map(|(device, cols, rows)| { Request::Terminal { device, cols, rows } }),
        Just(Request::Ping),
        (text(), any::<u16>()).prop_map(|(device, port)| Request::Forward { device, port }),
        (text(), text()).prop_map(|(device, name)| Request::Subsystem { device, name }),
        (
            prop::collection::vec(text(), 0..4),
            prop::collection::vec(text(), 0..4),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<bool>()
        )
            .prop_map(|(devices, commands, timeout_ms, max_output_bytes, stdin)| {
                Request::ExecWith {
                    devices,
                    commands,
                    timeout_ms,
                    flags: ExecFlags {
                        max_output_bytes,
                        stdin,
                    },
                }
            }),
        (text(), text(), protocol(), any::<Option<u64>>()).prop_map(
            |(device, path, protocol, max_bytes)| Request::FileGet {
                device,
                path,
                protocol,
                max_bytes,
            }
        ),
        (text(), text(), protocol(), any::<u64>(), any::<u32>()).prop_map(
            |(device, path, protocol, size, mode)| Request::FilePut {
                device,
                path,
                protocol,
                size,
                mode,
            }
        ),
        (
            prop::collection::vec(text(), 0..4),
            prop::collection::vec(text(), 0..4),
            any::<Option<u64>>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(devices, commands, timeout_ms, stdin, before, after)| {
                Request::ExecReset {
                    devices,
                    commands,
                    timeout_ms,
                    flags: ExecFlags {
                        max_output_bytes: None,
                        stdin,
                    },
                    reset: ShellReset { before, after },
                }
            }),
    ]
}

fn protocol() -> impl Strategy<Value = TransferProtocol> {
    prop_oneof![
        Just(TransferProtocol::Auto),
        Just(TransferProtocol::Sftp),
        Just(TransferProtocol::Scp),
    ]
}

fn envelope() -> impl Strategy<Value = RequestEnvelope> {
    (any::<Option<u64>>(), request()).prop_map(|(deadline_ms, request)| RequestEnvelope {
        deadline_ms,
        request,
    })
}

fn device() -> impl Strategy<Value = DeviceInfo> {
    (
        text(),
        text(),
        any::<u16>(),
        text(),
        prop::collection::btree_map(text(), text(), 0..3),
    )
        .prop_map(|(name, host, port, device_type, attributes)| DeviceInfo {
            name,
            host,
            port,
            device_type,
            attributes,
        })
}

fn command_done() -> impl Strategy<Value = CommandDone> {
    (
        any::<u32>(),
        blob(),
        any::<Option<u32>>(),
        any::<u64>(),
        prop::option::of(text()),
        blob(),
    )
        .prop_map(
            |(command, output, exit_status, duration_us, error, stderr)| CommandDone {
                command,
                output,
                exit_status,
                duration_us,
                error,
                stderr,
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        prop::collection::vec(device(), 0..3).prop_map(Response::Inventory),
        (any::<u32>(), any::<u32>(), any::<bool>(), blob()).prop_map(
            |(device, command, stderr, data)| Response::ExecOutput {
                device,
                command,
                stderr,
                data: Bytes::from(data),
            }
        ),
        (
            any::<u32>(),
            prop::collection::vec(command_done(), 0..3),
            prop::option::of(wire_error())
        )
            .prop_map(|(device, commands, error)| Response::ExecDevice {
                device,
                commands,
                error
            }),
        Just(Response::TerminalReady),
        blob().prop_map(Response::TerminalOutput),
        Just(Response::TerminalClosed),
        Just(Response::Pong),
        wire_error().prop_map(Response::Error),
        Just(Response::ForwardReady),
        (protocol(), any::<Option<u64>>())
            .prop_map(|(protocol, size)| Response::FileReady { protocol, size }),
        blob().prop_map(|data| Response::FileData {
            data: Bytes::from(data)
        }),
        any::<u64>().prop_map(|bytes| Response::FileDone { bytes }),
    ]
}

fn terminal_input() -> impl Strategy<Value = TerminalInput> {
    prop_oneof![
        blob().prop_map(TerminalInput::Data),
        (any::<u16>(), any::<u16>()).prop_map(|(cols, rows)| TerminalInput::Resize { cols, rows }),
    ]
}

fn relay_hello() -> impl Strategy<Value = RelayHello> {
    prop_oneof![
        prop::option::of(text()).prop_map(|token| RelayHello::Client { token }),
        prop::option::of(text()).prop_map(|advertise| RelayHello::Service { advertise }),
    ]
}

fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        (text(), any::<Option<u64>>()).prop_map(|(identity, expires_unix)| {
            HelloReply::Welcome {
                identity,
                expires_unix,
            }
        }),
        wire_error().prop_map(HelloReply::Refused),
    ]
}

fn relay_request() -> impl Strategy<Value = RelayRequest> {
    prop_oneof![
        text().prop_map(|token| RelayRequest::Reauth { token }),
        text().prop_map(|serial| RelayRequest::OpenTunnel { serial }),
        text().prop_map(|serial| RelayRequest::Assert { serial }),
        text().prop_map(|serial| RelayRequest::ServiceOtp { serial }),
        blob().prop_map(|csr_der| RelayRequest::IssueClientCert { csr_der }),
        any::<u64>().prop_map(|lifetime_secs| RelayRequest::CreateToken { lifetime_secs }),
    ]
}

fn facts() -> impl Strategy<Value = ServiceFacts> {
    (any::<[u8; 32]>(), prop::option::of(text())).prop_map(|(fingerprint, advertise)| {
        ServiceFacts {
            fingerprint,
            advertise,
        }
    })
}

fn packet_path() -> impl Strategy<Value = PacketPath> {
    (any::<u16>(), any::<[u8; 16]>()).prop_map(|(port, id)| PacketPath {
        port,
        id: TunnelId(id),
    })
}

fn relay_reply() -> impl Strategy<Value = RelayReply> {
    prop_oneof![
        Just(RelayReply::Ok),
        (facts(), prop::option::of(packet_path()))
            .prop_map(|(facts, packet)| RelayReply::TunnelOpen { facts, packet }),
        (text(), facts()).prop_map(|(token, facts)| RelayReply::Assertion { token, facts }),
        (text(), any::<u64>())
            .prop_map(|(otp, expires_unix)| RelayReply::Otp { otp, expires_unix }),
        (blob(), blob()).prop_map(|(cert_der, ca_der)| RelayReply::ClientCert { cert_der, ca_der }),
        (text(), text(), any::<u64>()).prop_map(|(id, token, expires_unix)| RelayReply::Token {
            id,
            token,
            expires_unix
        }),
        wire_error().prop_map(RelayReply::Error),
    ]
}

fn tunnel_offer() -> impl Strategy<Value = TunnelOffer> {
    (any::<u64>(), text(), prop::option::of(packet_path())).prop_map(|(tunnel, caller, packet)| {
        TunnelOffer {
            tunnel,
            caller,
            packet,
        }
    })
}

/// Encodes `msg` as a frame, reads it back as a receiver does, and checks
/// the result encodes to the very same frame.
fn frame_round_trip<T: Serialize + DeserializeOwned + Payload>(msg: &T) -> T {
    let sent = frame::encode(msg, frame::DEFAULT_MAX_FRAME).expect("encodes");
    let header = frame::parse_header(
        sent.head[..HEADER_LEN].try_into().expect("a header"),
        frame::DEFAULT_MAX_FRAME,
    )
    .expect("a valid header");
    let body = &sent.head[HEADER_LEN..];
    assert_eq!(header.body, body.len());
    let payload = sent.payload.clone().unwrap_or_default();
    assert_eq!(header.payload, payload.len());
    let got: T = frame::decode(body, payload).expect("decodes");
    let again = frame::encode(&got, frame::DEFAULT_MAX_FRAME).expect("encodes");
    assert_eq!(again.head, sent.head, "the same body");
    assert_eq!(again.payload, sent.payload, "the same payload");
    got
}

fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
    let text = serde_json::to_vec(msg).expect("encodes");
    let got: T = serde_json::from_slice(&text).expect("decodes");
    assert_eq!(&got, msg);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn auth_requests_round_trip(m in auth_request()) {
        frame_round_trip(&m);
    }

    #[test]
    fn auth_responses_round_trip(m in auth_response()) {
        frame_round_trip(&m);
    }

    #[test]
    fn request_envelopes_round_trip(m in envelope()) {
        frame_round_trip(&m);
    }

    #[test]
    fn responses_round_trip(m in response()) {
        prop_assert_eq!(frame_round_trip(&m), m);
    }

    #[test]
    fn terminal_input_round_trips(m in terminal_input()) {
        prop_assert_eq!(frame_round_trip(&m), m);
    }

    #[test]
    fn relay_hellos_round_trip(m in relay_hello()) {
        frame_round_trip(&m);
    }

    #[test]
    fn hello_replies_round_trip(m in hello_reply()) {
        frame_round_trip(&m);
    }

    #[test]
    fn relay_requests_round_trip(m in relay_request()) {
        frame_round_trip(&m);
    }

    #[test]
    fn relay_replies_round_trip(m in relay_reply()) {
        frame_round_trip(&m);
    }

    #[test]
    fn tunnel_offers_round_trip(m in tunnel_offer()) {
        frame_round_trip(&m);
    }

    #[test]
    fn relay_json_bodies_round_trip(
        (issuer, quic, otp, csr, fingerprint, advertise) in
            (text(), text(), text(), text(), text(), prop::option::of(text())),
        (iss, sub, aud, exp, iat) in (text(), text(), text(), any::<u64>(), any::<u64>()),
    ) {
        json_round_trip(&WellKnown { issuer: issuer.clone(), quic: quic.clone(), tcp: Some(quic.clone()) });
        json_round_trip(&EnrollServiceRequest { otp: crate::secret::Secret::new(otp), csr, fingerprint, advertise: advertise.clone() });
        json_round_trip(&EnrollServiceResponse {
            serial: iss.clone(),
            cert: sub.clone(),
            ca: aud.clone(),
            assertion_key: issuer,
            issuer: quic.clone(),
            nodes: vec![quic.clone(), advertise.clone().unwrap_or_default()],
            quic,
        });
        json_round_trip(&ErrorBody { error: sub.clone(), message: aud.clone() });
        json_round_trip(&TokenClaims {
            iss: iss.clone(),
            sub: sub.clone(),
            jti: aud.clone(),
            kind: iss.clone(),
            exp,
            iat,
        });
        json_round_trip(&AssertionClaims { iss, sub, aud, exp, iat });
    }
}
