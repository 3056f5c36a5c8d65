//! The front door's file-transfer calls: `FileDownload` (server streaming)
//! and `FileUpload` (client streaming). Each is one `FileGet` / `FilePut`
//! call on a link; chunks pass through as they come, one at a time (the
//! next is read only when the previous one was taken), so a slow end slows
//! the other, nothing buffers without bound.

use tonic::{Request, Response, Status, Streaming};

use super::{EventStream, FrontDoor, OpenCall, answer_with_first, cancelled, count_error, peer};
use crate::api::{convert, pb};
use crate::wire::messages::{
    Request as WireRequest, RequestEnvelope, Response as WireResponse, TerminalInput,
    TransferProtocol,
};

/// The wire protocol of an API one.
fn protocol(p: i32) -> TransferProtocol {
    match pb::TransferProtocol::try_from(p) {
        Ok(pb::TransferProtocol::Sftp) => TransferProtocol::Sftp,
        Ok(pb::TransferProtocol::Scp) => TransferProtocol::Scp,
        _ => TransferProtocol::Auto,
    }
}

/// The API protocol of a wire one.
fn api_protocol(p: TransferProtocol) -> i32 {
    match p {
        TransferProtocol::Auto => pb::TransferProtocol::Auto,
        TransferProtocol::Sftp => pb::TransferProtocol::Sftp,
        TransferProtocol::Scp => pb::TransferProtocol::Scp,
    }
    .into()
}

fn unexpected(what: &str, response: &WireResponse) -> Status {
    Status::internal(format!("unexpected reply to {what}: {response:?}"))
}

fn envelope(deadline: Option<std::time::Duration>, request: WireRequest) -> RequestEnvelope {
    RequestEnvelope {
        deadline_ms: deadline.map(|d| d.as_millis() as u64),
        request,
    }
}

impl FrontDoor {
    /// `FileDownload`: the service's `FileReady`, `FileData` and
    /// `FileDone` as events.
    pub(super) async fn file_download_call(
        &self,
        request: Request<pb::FileDownloadRequest>,
    ) -> Result<Response<EventStream<pb::FileDownloadEvent>>, Status> {
        let peer = peer(&request)?;
        let deadline = convert::deadline(request.metadata());
        let r = request.into_inner();
        let service = convert::service_ref(r.service.clone())?;
        let get = WireRequest::FileGet {
            device: r.device,
            path: r.remote_path,
            protocol: protocol(r.protocol),
            max_bytes: Some(r.max_bytes).filter(|n| *n > 0),
        };
        let open = self
            .open_call(peer, service, envelope(deadline, get))
            .await?;
        answer_with_first(download_events(open)).await
    }

    /// `FileUpload`: waits for the service's `FileReady`, forwards the
    /// caller's chunks, ends the input, answers the `FileDone`.
    pub(super) async fn file_upload_call(
        &self,
        request: Request<Streaming<pb::FileUploadInput>>,
    ) -> Result<Response<pb::FileTransferResult>, Status> {
        use pb::file_upload_input::Input;
        let peer = peer(&request)?;
        let deadline = convert::deadline(request.metadata());
        let mut input = request.into_inner();
        let Some(Input::Start(start)) = input.message().await?.and_then(|m| m.input) else {
            return Err(Status::invalid_argument(
                "the first FileUploadInput message must carry `start`",
            ));
        };
        let service = convert::service_ref(start.service.clone())?;
        let put = WireRequest::FilePut {
            device: start.device,
            path: start.remote_path,
            protocol: protocol(start.protocol),
            size: start.size,
            mode: if start.mode == 0 { 0o644 } else { start.mode },
        };
        let mut open = self
            .open_call(peer, service, envelope(deadline, put))
            .await?;
        let result = upload(&mut open, &mut input).await;
        if let Err(status) = &result {
            count_error(status);
        }
        result.map(Response::new)
    }
}

/// The next response of a call, the session's end being a cancellation.
async fn next(open: &mut OpenCall) -> Option<Result<WireResponse, Status>> {
    tokio::select! {
        _ = open.cancel.cancelled() => Some(Err(cancelled())),
        next = open.call.next() => next.map(|r| r.map_err(Status::from)),
    }
}

async fn upload(
    open: &mut OpenCall,
    input: &mut Streaming<pb::FileUploadInput>,
) -> Result<pb::FileTransferResult, Status> {
    use pb::file_upload_input::Input;
    let ended = || Status::unavailable("the service ended the upload without an answer");
    let protocol = match next(open).await.ok_or_else(ended)?? {
        WireResponse::FileReady { protocol, .. } => protocol,
        other => return Err(unexpected("an upload", &other)),
    };
    loop {
        let message = tokio::select! {
            _ = open.cancel.cancelled() => return Err(cancelled()),
            m = input.message() => m?,
        };
        let data = match message.and_then(|m| m.input) {
            Some(Input::Data(data)) => data,
            Some(Input::Start(_)) => {
                return Err(Status::invalid_argument("the upload has already started"));
            }
            None => break,
        };
        if data.is_empty() {
            continue;
        }
        if let Err(e) = open.call.send_input(TerminalInput::Data(data.into())).await {
            // The service stopped taking bytes: its answer says why.
            tracing::debug!(error = %e, "upload input not forwarded");
            break;
        }
    }
    open.call.finish_input();
    match next(open).await.ok_or_else(ended)?? {
        WireResponse::FileDone { bytes } => Ok(pb::FileTransferResult {
            bytes,
            protocol: api_protocol(protocol),
        }),
        other => Err(unexpected("an upload", &other)),
    }
}

fn download_events(open: OpenCall) -> EventStream<pb::FileDownloadEvent> {
    use pb::file_download_event::Event;
    // The protocol rides along so `done` can repeat it.
    Box::pin(futures::stream::unfold(
        Some((open, 0)),
        |state| async move {
            let (mut open, mut used) = state?;
            let event = match next(&mut open).await? {
                Err(status) => {
                    count_error(&status);
                    return Some((Err(status), None));
                }
                Ok(WireResponse::FileReady { protocol, size }) => {
                    used = api_protocol(protocol);
                    Event::Started(pb::FileTransferStarted {
                        protocol: used,
                        size,
                    })
                }
                Ok(WireResponse::FileData { data }) => Event::Data(data),
                Ok(WireResponse::FileDone { bytes }) => {
                    let done = pb::FileTransferResult {
                        bytes,
                        protocol: used,
                    };
                    let event = pb::FileDownloadEvent {
                        event: Some(Event::Done(done)),
                    };
                    return Some((Ok(event), None));
                }
                Ok(other) => return Some((Err(unexpected("a download", &other)), None)),
            };
            let event = pb::FileDownloadEvent { event: Some(event) };
            Some((Ok(event), Some((open, used))))
        },
    ))
}
