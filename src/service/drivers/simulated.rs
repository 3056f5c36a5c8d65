//! The `simulator` driver: the simulated CLI run in-process, with no network
//! and no SSH. Benchmarks use it to measure the broker and service alone.
//! Output goes to the sink as the driver interface says; bulk output is
//! made one chunk at a time, so memory stays one chunk however large it is.

use std::time::Instant;

use super::output::{OUTPUT_CHUNK, OutputSink, OutputStream, SinkError};
use super::{CommandError, CommandRun, DeviceRun, DeviceTarget};
use crate::sim::model::{CliState, Output, SimDevice, bulk_fill};

/// Runs each command against a simulated device named like the target.
/// Stops early only when the caller went away.
pub async fn run(target: &DeviceTarget, commands: &[String], sink: &mut OutputSink) -> DeviceRun {
    let device = SimDevice::new(&target.name);
    let mut state = CliState::default();
    let mut results = Vec::with_capacity(commands.len());
    let mut output_bytes = 0u64;
    for (index, command) in commands.iter().enumerate() {
        let started = Instant::now();
        sink.start_command(index as u32);
        let (exit_status, written) = match device.run(&mut state, command) {
            Output::Text { text, exit_status } => (
                Some(exit_status),
                write(sink, text.as_bytes())
                    .await
                    .map(|()| text.len() as u64),
            ),
            Output::Binary(bytes) => (
                Some(0),
                write(sink, &bytes).await.map(|()| bytes.len() as u64),
            ),
            Output::Bulk(n) => (Some(0), bulk(sink, n).await.map(|()| n)),
            Output::Exit => (Some(0), Ok(0)),
            // An exec channel has no dialogue: say what a shell would ask.
            Output::Enable => {
                let text = "% enable needs an interactive session\n";
                (
                    Some(1),
                    write(sink, text.as_bytes())
                        .await
                        .map(|()| text.len() as u64),
                )
            }
            Output::Confirm(question) => {
                let text = format!("{question}\n");
                (
                    Some(1),
                    write(sink, text.as_bytes())
                        .await
                        .map(|()| text.len() as u64),
                )
            }
        };
        let error = match written {
            Ok(n) => {
                output_bytes += n;
                None
            }
            Err(e) => Some(CommandError::from(e)),
        };
        let gone = error == Some(CommandError::CallerGone);
        let tail = sink.end_command().await.unwrap_or_default();
        results.push(CommandRun {
            command: command.clone(),
            duration: started.elapsed(),
            exit_status: exit_status.filter(|_| error.is_none()),
            error,
            tail,
        });
        if gone {
            break;
        }
    }
    DeviceRun {
        results,
        learned_host_key: None,
        output_bytes,
    }
}

async fn write(sink: &mut OutputSink, bytes: &[u8]) -> Result<(), SinkError> {
    sink.write(OutputStream::Stdout, bytes).await
}

/// `n` bytes of filler, made and sent one chunk at a time.
async fn bulk(sink: &mut OutputSink, n: u64) -> Result<(), SinkError> {
    let mut buf = vec![0u8; OUTPUT_CHUNK.min(n as usize)];
    let mut at = 0u64;
    while at < n {
        let len = (n - at).min(buf.len() as u64) as usize;
        bulk_fill(&mut buf[..len], at);
        sink.write(OutputStream::Stdout, &buf[..len]).await?;
        at += len as u64;
    }
    Ok(())
}
