//! The front door's exec calls: `Exec` (server streaming) and
//! `ExecWithInput` (the caller's stdin forwarded). Both turn into one
//! `ExecWith` call on a link whose responses are the gRPC stream itself (no
//! task, no buffer: the next event is read from the link only when gRPC
//! asks for it, so a slow caller slows the link and the device read); the
//! stream ends with an `ExecSummary` (overall status, counts, time).

use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};

use super::{EventStream, FrontDoor, OpenCall, answer_with_first, cancelled, count_error, peer};
use crate::api::convert::{self, ExecTally};
use crate::api::pb;
use crate::wire::messages::{
    ExecFlags, Request as WireRequest, RequestEnvelope, ShellReset, TerminalInput,
};

/// The link request for a gRPC exec: `ExecWith`, or `ExecReset` when the
/// caller asked for fresh shells (so execs without a reset still reach
/// services that predate it).
fn envelope(
    r: pb::ExecRequest,
    deadline: Option<std::time::Duration>,
    stdin: bool,
) -> RequestEnvelope {
    let (devices, commands) = (r.devices, r.commands);
    let timeout_ms = Some(r.timeout_ms).filter(|t| *t > 0);
    let flags = ExecFlags {
        max_output_bytes: Some(r.max_output_bytes).filter(|n| *n > 0),
        stdin,
    };
    let reset = ShellReset {
        before: r.reset_before,
        after: r.reset_after,
    };
    let request = if reset.any() {
        WireRequest::ExecReset {
            devices,
            commands,
            timeout_ms,
            flags,
            reset,
        }
    } else {
        WireRequest::ExecWith {
            devices,
            commands,
            timeout_ms,
            flags,
        }
    };
    RequestEnvelope {
        deadline_ms: deadline.map(|d| d.as_millis() as u64),
        request,
    }
}

impl FrontDoor {
    /// `Exec`: the command's input ends at once.
    pub(super) async fn exec_call(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<EventStream<pb::ExecEvent>>, Status> {
        let started = Instant::now();
        let peer = peer(&request)?;
        let deadline = convert::deadline(request.metadata());
        let r = request.into_inner();
        let service = convert::service_ref(r.service.clone())?;
        let open = self
            .open_call(peer, service, envelope(r, deadline, false))
            .await?;
        answer_with_first(events(open, None, started)).await
    }

    /// `ExecWithInput`: the first message says what to run, the rest is
    /// the command's input.
    pub(super) async fn exec_with_input_call(
        &self,
        request: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<EventStream<pb::ExecEvent>>, Status> {
        let started = Instant::now();
        let peer = peer(&request)?;
        let deadline = convert::deadline(request.metadata());
        let mut input = request.into_inner();
        let refuse = || Status::invalid_argument("the first ExecInput message must carry `start`");
        let Some(pb::exec_input::Input::Start(r)) = input.message().await?.and_then(|m| m.input)
        else {
            return Err(refuse());
        };
        let service = convert::service_ref(r.service.clone())?;
        let open = self
            .open_call(peer, service, envelope(r, deadline, true))
            .await?;
        // Not `answer_with_first`: the first event may wait for input.
        Ok(Response::new(events(open, Some(input), started)))
    }
}

/// The call's events: link responses as gRPC events (input forwarded
/// meanwhile), then the summary.
fn events(
    open: OpenCall,
    input: Option<Streaming<pb::ExecInput>>,
    started: Instant,
) -> EventStream<pb::ExecEvent> {
    struct State {
        open: OpenCall,
        input: Option<Streaming<pb::ExecInput>>,
        tally: ExecTally,
    }
    let state = State {
        open,
        input,
        tally: ExecTally::default(),
    };
    Box::pin(futures::stream::unfold(
        Some(state),
        move |state| async move {
            let mut s = state?;
            loop {
                tokio::select! {
                    _ = s.open.cancel.cancelled() => return Some((Err(cancelled()), None)),
                    msg = async { s.input.as_mut()?.message().await.ok() }, if s.input.is_some() => {
                        use pb::exec_input::Input;
                        let sent = match msg.flatten().and_then(|m| m.input) {
                            Some(Input::Data(bytes)) => {
                                s.open.call.send_input(TerminalInput::Data(bytes)).await
                            }
                            Some(Input::Start(_)) => {
                                let status = Status::invalid_argument("the exec has already started");
                                return Some((Err(status), None));
                            }
                            None => {
                                // The caller's input ended: the command's does.
                                s.open.call.finish_input();
                                s.input = None;
                                Ok(())
                            }
                        };
                        if let Err(e) = sent {
                            // The command no longer takes input (it ended);
                            // its result still comes.
                            tracing::debug!(error = %e, "exec input not forwarded");
                            s.input = None;
                        }
                    }
                    next = s.open.call.next() => match next {
                        None => {
                            let elapsed = started.elapsed();
                            metrics::histogram!("switchyard_exec_duration_seconds")
                                .record(elapsed.as_secs_f64());
                            return Some((Ok(s.tally.summary(elapsed)), None));
                        }
                        Some(Err(e)) => {
                            let status: Status = e.into();
                            count_error(&status);
                            return Some((Err(status), None));
                        }
                        Some(Ok(response)) => {
                            if let Some(event) = convert::exec_event(response) {
                                s.tally.count(&event);
                                return Some((Ok(event), Some(s)));
                            }
                        }
                    },
                }
            }
        },
    ))
}
