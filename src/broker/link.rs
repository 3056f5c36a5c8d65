//! The transport-neutral link interface.
//!
//! A [`LinkChannel`] is what a request needs from a link: a way to open one
//! call. Every transport speaks the same request/response messages, so the
//! front door and sessions never know whether a service is reached directly
//! (over QUIC or over HTTP/2 on TLS/TCP: `wire::mux::Conn`) or run
//! in-process; the cloud relay plugs in the same way.

use tokio::sync::mpsc;

use crate::wire::conn::{ConnError, FrameReader, Liveness, Waiting, write_encoded};
use crate::wire::frame::{self, Encoded, FrameError, Payload};
use crate::wire::messages::{ErrorCode, RequestEnvelope, Response, TerminalInput, WireError};
use crate::wire::mux::{Conn, RecvHalf, SendHalf};

/// Why a link or a call on it failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("service {target} is unreachable: {reason}")]
    Unreachable { target: String, reason: String },
    #[error(
        "service {target} presented certificate {presented}, expected {expected}; \
         if the service was re-initialized, check its fingerprint with \
         `switchyard service info` and pass it with `--fingerprint` (the SDK's \
         `fingerprint=`), which also replaces the remembered one, or forget \
         the remembered one with `switchyard known-services forget {target}`"
    )]
    FingerprintMismatch {
        target: String,
        expected: String,
        presented: String,
    },
    #[error("service {target} refused the login: {error}")]
    Rejected { target: String, error: WireError },
    /// Something on the way refused before any login (the relay knows no
    /// such serial; the service advertises no address). Final, like
    /// `Rejected`.
    #[error("service {target} cannot be reached: {error}")]
    Refused { target: String, error: WireError },
    #[error("connection to service {target} was lost: {reason}")]
    Lost { target: String, reason: String },
    /// The caller's request (or terminal input) does not fit one frame of
    /// the link; nothing was sent and the link is unaffected.
    #[error(
        "the request is {size} bytes, over the {limit}-byte message limit of the link to \
         service {target}; send fewer or shorter commands (or smaller input chunks)"
    )]
    RequestTooLarge {
        target: String,
        size: usize,
        limit: usize,
    },
    #[error("{0}")]
    Remote(WireError),
    #[error("protocol error talking to service {target}: {reason}")]
    Protocol { target: String, reason: String },
    #[error("{0}")]
    Closed(String),
}

impl LinkError {
    /// The connection to `target` broke; `reason` says how.
    pub fn lost(target: &str, reason: impl std::fmt::Display) -> Self {
        Self::Lost {
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The error category (mapped to a gRPC code at the front door).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unreachable { .. } | Self::Lost { .. } | Self::Closed(_) => {
                ErrorCode::Unavailable
            }
            Self::FingerprintMismatch { .. } => ErrorCode::PermissionDenied,
            Self::RequestTooLarge { .. } => ErrorCode::ResourceExhausted,
            Self::Rejected { error, .. } | Self::Refused { error, .. } | Self::Remote(error) => {
                error.code
            }
            Self::Protocol { .. } => ErrorCode::Internal,
        }
    }
}

/// A handle to open calls on a link.
#[derive(Clone)]
pub enum LinkChannel {
    /// A connection to a service's RPC socket (QUIC or TCP), or a relayed
    /// one: each call is one stream on it. Each call counts as waiting on
    /// it in `liveness`, so a peer silent while calls wait is found gone
    /// within the liveness bound.
    Remote {
        conn: Conn,
        target: String,
        max_frame: usize,
        liveness: Liveness,
    },
    /// The service library in this process.
    Local {
        ops: std::sync::Arc<crate::service::ops::ServiceOps>,
        principal: std::sync::Arc<crate::service::ops::Principal>,
    },
}

/// One call in progress: responses in, terminal input out.
pub enum CallStream {
    Remote {
        send: SendHalf,
        /// The response side.
        recv: RecvHalf,
        /// Reads `recv`'s frames, keeping one read half-way so that
        /// [`CallStream::next`] is cancel-safe (callers race it against
        /// their own input in `select!`).
        reader: Box<FrameReader>,
        /// The stream ended or failed: no more reads.
        done: bool,
        target: String,
        max_frame: usize,
        liveness: Liveness,
        /// The call waits on the connection until it is dropped.
        _waiting: Waiting,
    },
    Local {
        responses: mpsc::Receiver<Response>,
        input: Option<mpsc::Sender<TerminalInput>>,
        _task: crate::task::AbortOnDrop<()>,
    },
}

/// The next response frame of a call's stream (cancel-safe, see
/// [`FrameReader`]); after its end or an error, `Ok(None)` for good.
async fn next_response(
    recv: &mut RecvHalf,
    reader: &mut FrameReader,
    done: &mut bool,
    max_frame: usize,
) -> Result<Option<Response>, ConnError> {
    if *done {
        return Ok(None);
    }
    let read = reader.next::<Response>(recv, max_frame).await;
    *done = !matches!(read, Ok(Some(_)));
    read
}

/// Encodes what a caller sends on a link; a message over the link's frame
/// limit is the caller's error, not a lost link.
fn encode_request<T: serde::Serialize + Payload>(
    msg: &T,
    max_frame: usize,
    target: &str,
) -> Result<Encoded, LinkError> {
    frame::encode(msg, max_frame).map_err(|e| match e {
        FrameError::TooLarge { size, limit } => LinkError::RequestTooLarge {
            target: target.to_string(),
            size,
            limit,
        },
        other => LinkError::Protocol {
            target: target.to_string(),
            reason: other.to_string(),
        },
    })
}

impl LinkChannel {
    /// Opens a call: sends the request; responses come from the stream.
    pub async fn call(&self, envelope: RequestEnvelope) -> Result<CallStream, LinkError> {
        match self {
            Self::Remote {
                conn,
                target,
                max_frame,
                liveness,
            } => {
                let lost = |e: &dyn std::fmt::Display| LinkError::lost(target, liveness.explain(e));
                let takes_input = envelope.request.takes_input();
                let frame = encode_request(&envelope, *max_frame, target)?;
                let waiting = liveness.waiting();
                let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
                write_encoded(&mut send, frame)
                    .await
                    .map_err(|e| lost(&e))?;
                if !takes_input {
                    // The end of the request rides in the request's packet
                    // (QUIC) or frame batch (HTTP/2).
                    // Left open, it would go alone when the call is dropped,
                    // and the service would answer that packet with an
                    // acknowledgement and a stream credit of their own:
                    // four more packets and wake-ups per call.
                    send.finish().map_err(|e| lost(&e))?;
                }
                Ok(CallStream::Remote {
                    send,
                    recv,
                    reader: Box::default(),
                    done: false,
                    target: target.clone(),
                    max_frame: *max_frame,
                    liveness: liveness.clone(),
                    _waiting: waiting,
                })
            }
            Self::Local { ops, principal } => {
                let (in_tx, in_rx) =
                    mpsc::channel(crate::service::drivers::terminal::TERMINAL_QUEUE);
                let (out_tx, out_rx) = mpsc::channel(64);
                let ops = ops.clone();
                let principal = principal.clone();
                let task = tokio::spawn(async move {
                    ops.handle(&principal, envelope, in_rx, out_tx).await;
                });
                Ok(CallStream::Local {
                    responses: out_rx,
                    input: Some(in_tx),
                    _task: crate::task::AbortOnDrop::new(task),
                })
            }
        }
    }
}

impl CallStream {
    /// The next response; `None` when the call is complete.
    pub async fn next(&mut self) -> Option<Result<Response, LinkError>> {
        match self {
            Self::Remote {
                recv,
                reader,
                done,
                target,
                max_frame,
                liveness,
                ..
            } => match next_response(recv, reader, done, *max_frame).await {
                Ok(Some(Response::Error(e))) => Some(Err(LinkError::Remote(e))),
                Ok(Some(r)) => Some(Ok(r)),
                Ok(None) => None,
                Err(ConnError::Frame(e)) => Some(Err(LinkError::Protocol {
                    target: target.clone(),
                    reason: e.to_string(),
                })),
                Err(e) => Some(Err(LinkError::lost(target, liveness.explain(e)))),
            },
            Self::Local { responses, .. } => match responses.recv().await? {
                Response::Error(e) => Some(Err(LinkError::Remote(e))),
                r => Some(Ok(r)),
            },
        }
    }

    /// Sends terminal input.
    pub async fn send_input(&mut self, input: TerminalInput) -> Result<(), LinkError> {
        match self {
            Self::Remote {
                send,
                target,
                max_frame,
                liveness,
                ..
            } => {
                let frame = encode_request(&input, *max_frame, target)?;
                write_encoded(send, frame)
                    .await
                    .map_err(|e| LinkError::lost(target, liveness.explain(e)))
            }
            Self::Local {
                input: Some(tx), ..
            } => tx
                .send(input)
                .await
                .map_err(|_| LinkError::Closed("the terminal has ended".into())),
            Self::Local { input: None, .. } => {
                Err(LinkError::Closed("the terminal input is closed".into()))
            }
        }
    }

    /// Ends the caller's input (the terminal's end of file).
    pub fn finish_input(&mut self) {
        match self {
            Self::Remote { send, .. } => {
                let _ = send.finish();
            }
            Self::Local { input, .. } => *input = None,
        }
    }
}
