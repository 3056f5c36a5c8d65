//! Fuzz targets: every decoder a peer's bytes reach, each with seeds (valid
//! encodings of every message variant) for the engine to mutate.
//!
//! A target checks more than "no panic": whatever decodes must encode again,
//! and that encoding must decode to the same encoding (so a decoder never
//! accepts what the encoder cannot say); a frame's pieces must reassemble
//! to the same bytes; a packet header that parses must be the header its
//! fields make.

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard::api::pb;
use switchyard::wire::codec;
use switchyard::wire::frame::{self, Assembler, HEADER_LEN, Payload};
use switchyard::wire::messages::{
    AuthRequest, AuthResponse, CommandDone, Credentials, DeviceInfo, ErrorCode, ExecFlags, Request,
    RequestEnvelope, Response, TerminalInput, WireError,
};
use switchyard::wire::packet_relay::{self, PacketPath, PeerRole, TunnelId};
use switchyard::wire::relay::{
    EnrollServiceRequest, ErrorBody, HelloReply, RelayHello, RelayReply, RelayRequest,
    ServiceFacts, TunnelOffer, WellKnown,
};
use tokio_util::codec::Decoder;

use super::engine::Target;

/// Every target, in the order CI runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frame",
        run: frame_target,
        seeds: frame_seeds,
    },
    Target {
        name: "service_messages",
        run: service_messages_target,
        seeds: service_message_seeds,
    },
    Target {
        name: "relay_messages",
        run: relay_messages_target,
        seeds: relay_message_seeds,
    },
    Target {
        name: "relay_json",
        run: relay_json_target,
        seeds: relay_json_seeds,
    },
    Target {
        name: "packet_header",
        run: packet_header_target,
        seeds: packet_header_seeds,
    },
    Target {
        name: "tunnel_stream",
        run: tunnel_stream_target,
        seeds: tunnel_stream_seeds,
    },
    Target {
        name: "broker_api",
        run: broker_api_target,
        seeds: broker_api_seeds,
    },
];

/// The frame limit the targets decode under (the default).
const LIMIT: usize = frame::DEFAULT_MAX_FRAME;

/// Decodes `bytes` as `T`; if that works, checks encode → decode → encode
/// gives the same bytes.
fn round_trips<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(value) = codec::decode::<T>(bytes) else {
        return;
    };
    let once = codec::encode(&value).expect("a decoded message encodes");
    let again: T = codec::decode(&once).expect("an encoded message decodes");
    assert_eq!(
        codec::encode(&again).expect("encodes"),
        once,
        "encode/decode is not stable"
    );
}

/// The same, through frames (header, body, payload).
fn frame_round_trips<T: Serialize + DeserializeOwned + Payload>(body: &[u8], payload: &Bytes) {
    let Ok(value) = frame::decode::<T>(body, payload.clone()) else {
        return;
    };
    let encoded = frame::encode(&value, usize::MAX).expect("a decoded frame encodes");
    assert_eq!(
        encoded.payload.clone().unwrap_or_default(),
        *payload,
        "the payload is carried unchanged"
    );
    let again: T = frame::decode(&encoded.head[HEADER_LEN..], payload.clone())
        .expect("an encoded frame decodes");
    assert_eq!(
        frame::encode(&again, usize::MAX).expect("encodes").head,
        encoded.head
    );
}

fn frame_target(data: &[u8]) {
    let Some(header) = data.get(..HEADER_LEN) else {
        return;
    };
    let Ok(lengths) = frame::parse_header(header.try_into().expect("9 bytes"), LIMIT) else {
        return;
    };
    assert!(lengths.body + lengths.payload <= LIMIT);
    let rest = &data[HEADER_LEN..];
    // Reassembly from pieces of the sizes the input's own bytes pick.
    let mut body = Assembler::new(lengths.body.min(rest.len()));
    let mut at = 0;
    while body.missing() > 0 {
        let step = 1 + usize::from(rest[at]) % 7;
        let end = (at + step).min(rest.len());
        body.push(Bytes::copy_from_slice(&rest[at..end]));
        assert!(body.held() <= 2 * end, "holds {} after {end}", body.held());
        at = end;
    }
    let joined = body.finish().expect("complete");
    assert_eq!(
        &joined[..],
        &rest[..joined.len()],
        "reassembly keeps the bytes"
    );
    if rest.len() < lengths.body + lengths.payload {
        return;
    }
    let (body, rest) = rest.split_at(lengths.body);
    let payload = Bytes::copy_from_slice(&rest[..lengths.payload]);
    frame_round_trips::<AuthRequest>(body, &payload);
    frame_round_trips::<AuthResponse>(body, &payload);
    frame_round_trips::<RequestEnvelope>(body, &payload);
    frame_round_trips::<Response>(body, &payload);
    frame_round_trips::<TerminalInput>(body, &payload);
}

fn service_messages_target(data: &[u8]) {
    round_trips::<AuthRequest>(data);
    round_trips::<AuthResponse>(data);
    round_trips::<RequestEnvelope>(data);
    round_trips::<Response>(data);
    round_trips::<TerminalInput>(data);
}

fn relay_messages_target(data: &[u8]) {
    round_trips::<RelayHello>(data);
    round_trips::<HelloReply>(data);
    round_trips::<RelayRequest>(data);
    round_trips::<RelayReply>(data);
    round_trips::<TunnelOffer>(data);
}

fn relay_json_target(data: &[u8]) {
    let _ = serde_json::from_slice::<WellKnown>(data);
    let _ = serde_json::from_slice::<EnrollServiceRequest>(data);
    let _ = serde_json::from_slice::<ErrorBody>(data);
}

fn packet_header_target(data: &[u8]) {
    if let Some((role, id)) = packet_relay::parse(data) {
        assert_eq!(
            packet_relay::header(role, id)[..],
            data[..packet_relay::HEADER_LEN]
        );
    }
    // Either header (an end's or the node hop's) reads back as built.
    let built = match packet_relay::classify(data) {
        Ok(packet_relay::Header::End { role, id }) => packet_relay::header(role, id),
        Ok(packet_relay::Header::Hop { role, token }) => packet_relay::hop_header(role, token),
        Err(_) => return,
    };
    assert_eq!(built[..], data[..packet_relay::HEADER_LEN]);
    // A batch of any stride: checked and rewritten without a panic, and a
    // rewritten batch of one tunnel stays one tunnel's, payload untouched.
    let stride = usize::from(data[data.len() - 1]).max(1);
    let mut batch = data.to_vec();
    let one = packet_relay::one_tunnel(&batch, stride);
    packet_relay::rewrite(&mut batch, stride, &[0x01; packet_relay::HEADER_LEN]);
    if one {
        assert!(packet_relay::one_tunnel(&batch, stride));
        for (a, b) in batch.chunks(stride).zip(data.chunks(stride)) {
            assert_eq!(a[packet_relay::HEADER_LEN..], b[packet_relay::HEADER_LEN..]);
        }
    }
}

fn tunnel_stream_target(data: &[u8]) {
    let mut codec = switchyard::wire::tunnel::packet_codec();
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(packet)) = codec.decode(&mut buf) {
        assert!(packet.len() <= usize::from(switchyard::wire::tunnel::TUNNEL_MTU));
        consumed += 2 + packet.len();
    }
    assert!(consumed <= data.len());
}

fn broker_api_target(data: &[u8]) {
    // What a local caller sends the broker over its Unix socket (protobuf
    // in gRPC), and the header values it parses itself.
    let _ = pb::ExecRequest::decode(data);
    let _ = pb::ServiceDirectRequest::decode(data);
    let _ = pb::TerminalRequest::decode(data);
    if let Ok(r) = pb::OpenSessionRequest::decode(data) {
        let _ = r.encode_to_vec();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchyard::api::convert::grpc_timeout(text);
    }
}

// Seeds: every message variant, encoded.

fn error() -> WireError {
    WireError::new(ErrorCode::PermissionDenied, "no such device: r1")
}

fn service_messages() -> Vec<Vec<u8>> {
    let enc = |v: &dyn erased::Encode| v.encode();
    let device = DeviceInfo {
        name: "core-1".into(),
        host: "10.0.0.1".into(),
        port: 22,
        device_type: "IOS-XE".into(),
        attributes: [("role".to_string(), "core".to_string())].into(),
    };
    let done = CommandDone {
        command: 1,
        output: b"Cisco IOS XE\n".to_vec(),
        exit_status: Some(0),
        duration_us: 1234,
        error: None,
        stderr: b"warning\xff\n".to_vec(),
    };
    vec![
        enc(&AuthRequest {
            credentials: Credentials::Password {
                username: "alice".into(),
                password: "secret".into(),
            },
            client: "switchyard-broker/0.1".into(),
        }),
        enc(&AuthRequest {
            credentials: Credentials::Assertion {
                token: "eyJhbGciOiJFZERTQSJ9.e30.c2ln".into(),
            },
            client: String::new(),
        }),
        enc(&AuthResponse::Accepted {
            service: "lab".into(),
        }),
        enc(&AuthResponse::Rejected(error())),
        enc(&RequestEnvelope {
            deadline_ms: Some(30_000),
            request: Request::Exec {
                devices: vec!["core-1".into(), "edge-1".into()],
                commands: vec!["show version".into(), "show clock".into()],
                timeout_ms: Some(5000),
            },
        }),
        enc(&RequestEnvelope {
            deadline_ms: None,
            request: Request::Inventory,
        }),
        enc(&RequestEnvelope {
            deadline_ms: None,
            request: Request::ExecWith {
                devices: vec!["core-1".into()],
                commands: vec!["cat".into()],
                timeout_ms: None,
                flags: ExecFlags {
                    max_output_bytes: Some(1 << 20),
                    stdin: true,
                },
            },
        }),
        enc(&RequestEnvelope {
            deadline_ms: None,
            request: Request::Terminal {
                device: "core-1".into(),
                cols: 80,
                rows: 24,
            },
        }),
        enc(&RequestEnvelope {
            deadline_ms: Some(1),
            request: Request::Ping,
        }),
        enc(&Response::Inventory(vec![device.clone(), device])),
        enc(&Response::ExecDevice {
            device: 0,
            commands: vec![done.clone(), done],
            error: Some(error()),
        }),
        enc(&Response::TerminalReady),
        enc(&Response::TerminalOutput(b"router#".to_vec())),
        enc(&Response::TerminalClosed),
        enc(&Response::Pong),
        enc(&Response::ForwardReady),
        enc(&RequestEnvelope {
            deadline_ms: None,
            request: Request::Forward {
                device: "core-1".into(),
                port: 443,
            },
        }),
        enc(&Response::Error(error())),
        enc(&TerminalInput::Data(b"show ip int brief\r".to_vec())),
        enc(&TerminalInput::Resize {
            cols: 132,
            rows: 50,
        }),
    ]
}

fn service_message_seeds() -> Vec<Vec<u8>> {
    service_messages()
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = service_messages()
        .into_iter()
        .map(|body| {
            let mut f = vec![frame::PROTOCOL_VERSION];
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(&0u32.to_be_bytes());
            f.extend_from_slice(&body);
            f
        })
        .collect();
    let output = frame::encode(
        &Response::ExecOutput {
            device: 1,
            command: 0,
            stderr: false,
            data: Bytes::from_static(b"interface Gi0/0\n ip address 10.0.0.1\n"),
        },
        LIMIT,
    )
    .expect("encodes");
    let mut f = output.head;
    f.extend_from_slice(&output.payload.expect("a payload"));
    seeds.push(f);
    seeds
}

fn facts() -> ServiceFacts {
    ServiceFacts {
        fingerprint: [0xab; 32],
        advertise: Some("203.0.113.7:8181".into()),
    }
}

fn relay_message_seeds() -> Vec<Vec<u8>> {
    let enc = |v: &dyn erased::Encode| v.encode();
    let path = PacketPath {
        port: 8183,
        id: TunnelId([7; 16]),
    };
    vec![
        enc(&RelayHello::Client {
            token: Some("eyJ0eXAiOiJKV1QifQ.e30.sig".into()),
        }),
        enc(&RelayHello::Client { token: None }),
        enc(&RelayHello::Service {
            advertise: Some("192.0.2.1:8181".into()),
        }),
        enc(&HelloReply::Welcome {
            identity: "alice@example.com".into(),
            expires_unix: Some(1_900_000_000),
        }),
        enc(&HelloReply::Refused(error())),
        enc(&RelayRequest::Reauth { token: "t".into() }),
        enc(&RelayRequest::OpenTunnel {
            serial: "SN-1".into(),
        }),
        enc(&RelayRequest::Assert {
            serial: "SN-1".into(),
        }),
        enc(&RelayRequest::ServiceOtp {
            serial: "SN-2".into(),
        }),
        enc(&RelayRequest::IssueClientCert {
            csr_der: vec![0x30, 0x82, 0x01, 0x0a, 0x02],
        }),
        enc(&RelayRequest::CreateToken {
            lifetime_secs: 86_400,
        }),
        enc(&RelayReply::Ok),
        enc(&RelayReply::TunnelOpen {
            facts: facts(),
            packet: Some(path),
        }),
        enc(&RelayReply::Assertion {
            token: "a.b.c".into(),
            facts: facts(),
        }),
        enc(&RelayReply::Otp {
            otp: "123-456".into(),
            expires_unix: 1,
        }),
        enc(&RelayReply::ClientCert {
            cert_der: vec![0x30, 0x82],
            ca_der: vec![0x30, 0x81],
        }),
        enc(&RelayReply::Token {
            id: "tok-1".into(),
            token: "secret".into(),
            expires_unix: 2,
        }),
        enc(&RelayReply::Error(error())),
        enc(&TunnelOffer {
            tunnel: 42,
            caller: "alice@example.com".into(),
            packet: Some(path),
        }),
    ]
}

fn relay_json_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"{"issuer":"switchyard-relay:0011","quic":"127.0.0.1:8182"}"#.to_vec(),
        br#"{"otp":"123","csr":"-----BEGIN CERTIFICATE REQUEST-----","fingerprint":"ab:cd","advertise":null}"#.to_vec(),
        br#"{"error":"invalid_request","message":"bad otp"}"#.to_vec(),
    ]
}

fn packet_header_seeds() -> Vec<Vec<u8>> {
    let mut datagram = packet_relay::header(PeerRole::Client, TunnelId([9; 16])).to_vec();
    datagram.extend_from_slice(&[0x40, 1, 2, 3]);
    let hop = packet_relay::hop_header(PeerRole::Service, packet_relay::HopToken([7; 16]));
    let mut batch = Vec::new();
    for _ in 0..3 {
        batch.extend_from_slice(&hop);
        batch.extend_from_slice(&[0x40, 1, 2, 22]);
    }
    vec![
        datagram,
        packet_relay::header(PeerRole::Service, TunnelId([0; 16])).to_vec(),
        batch,
    ]
}

fn tunnel_stream_seeds() -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    for packet in [&b"\x40quic short packet"[..], &[0xc3; 1200][..], b""] {
        stream.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        stream.extend_from_slice(packet);
    }
    vec![stream]
}

fn broker_api_seeds() -> Vec<Vec<u8>> {
    vec![
        pb::ExecRequest {
            service: Some(pb::ServiceRef {
                session_id: "s1".into(),
                service_id: "svc".into(),
                name: String::new(),
            }),
            devices: vec!["core-1".into()],
            commands: vec!["show version".into()],
            timeout_ms: 1000,
            max_output_bytes: 1 << 20,
            ..Default::default()
        }
        .encode_to_vec(),
        pb::ServiceDirectRequest {
            session_id: "s".into(),
            name: "lab".into(),
            username: "alice".into(),
            host: "127.0.0.1".into(),
            port: 8181,
            password: "pw".into(),
            fingerprint: String::new(),
            rpc_url: "https://127.0.0.1:8081/rpc".into(),
            proxy_url: "http://bob@127.0.0.1:3128".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        b"30S".to_vec(),
        b"1500m".to_vec(),
    ]
}

/// Object-safe encoding, so seeds of many types sit in one list.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            switchyard::wire::codec::encode(self).expect("a seed encodes")
        }
    }
}
