//! `switchyard exec`: runs commands through the broker and shows the
//! results: for one device in text mode its output as it comes, then its
//! status lines; for several devices (or `--json`) one report per device
//! when it ends; with `--raw`, like ssh: the command's bytes on stdout as
//! they come, its stderr on stderr, and its exit status as the process's.

use std::mem::take;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt as _;

use super::CliError;
use super::exec_live::LivePrinter;
use super::exec_output::{DEFAULT_BUFFER, DeviceError, ExecCollector, ExecOptions, ExecPrinter};
use super::output_writer::OutputWriter;
use super::remote::{broker_client, named};
use crate::api::pb;
use crate::wire::messages::CommandDone;

/// The exit code of `--raw` when the command's own status is not known:
/// the broker, service or device could not run it (as ssh uses 255).
const TRANSPORT_FAILURE: u8 = 255;

/// Bytes read from the caller's stdin per message with `--stdin`.
const STDIN_CHUNK: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The named service.
    pub name: String,
    #[command(flatten)]
    pub exec: ExecOptions,
    /// Like ssh, for one device and one command: the output bytes exactly,
    /// streamed as they come, the device's stderr on stderr, no header
    /// lines, and the command's exit status as this process's (255 when it
    /// could not run: broker, service or device unreachable, timeout).
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    /// Forward this process's standard input to the command (one device,
    /// one command). Without it the command's input ends at once.
    #[arg(long)]
    pub stdin: bool,
    /// Stop a command whose output (stdout and stderr) passes BYTES; it
    /// fails, its output up to then kept. Default: the service's
    /// (`ssh.max_output_bytes`, none unless configured).
    #[arg(long, value_name = "BYTES")]
    pub max_output: Option<u64>,
    /// Output held for reports of several devices (each printed when its
    /// device ends), in bytes across all devices; output beyond it is
    /// dropped and its command reported failed, saying so.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BUFFER)]
    pub max_buffer: u64,
    /// Start from a fresh shell on devices whose commands run in a warm
    /// shell (IOS-XE and ASA by default, `--session shell`, Telnet): the
    /// device's idle shells are closed and a new one is opened, so no mode
    /// an earlier exec left (`configure terminal`, `disable`) carries
    /// over. Exec channels start fresh for every command anyway.
    #[arg(long)]
    pub reset_before: bool,
    /// Close the shell the commands ran in afterwards instead of keeping
    /// it warm for the next exec (shell devices; see `--reset-before`).
    #[arg(long)]
    pub reset_after: bool,
}

pub async fn exec(socket: &Path, args: ExecArgs) -> Result<ExitCode, CliError> {
    if args.raw {
        return Ok(match raw(socket, args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(TRANSPORT_FAILURE)
            }
        });
    }
    let devices = args.exec.distinct_devices();
    let commands = args.exec.commands.clone();
    let json = args.exec.json;
    let budget = args.max_buffer;
    // One device in text mode: its output printed as it comes.
    let mut live = (!json && devices.len() == 1).then(|| LivePrinter::new(commands.clone()));
    // Made before the call starts: the summary's time covers all of it.
    let mut printer = match live {
        Some(_) => ExecPrinter::live(),
        None => ExecPrinter::new(json, devices.len()),
    };
    let mut events = start(socket, &args, devices.clone()).await?;
    let mut collector = ExecCollector::with_budget(devices, commands, budget);
    while let Some(event) = events.message().await? {
        use pb::exec_event::Event;
        let device = event.device;
        match (event.event, live.as_mut()) {
            (Some(Event::Output(o)), Some(live)) => live.output(o.command, o.stderr, o.data).await,
            (Some(Event::Output(o)), None) => {
                collector.output(device, o.command, o.stderr, &o.data)
            }
            (Some(Event::DeviceResult(mut r)), live) => {
                if let Some(live) = live {
                    for c in &mut r.commands {
                        let (output, stderr) = (take(&mut c.output), take(&mut c.stderr));
                        live.output(c.command, false, output.into()).await;
                        live.output(c.command, true, stderr.into()).await;
                    }
                    live.finish().await;
                }
                let (commands, error) = device_result(r);
                if let Some(report) = collector.device_done(device, commands, error) {
                    printer.print(&report);
                }
            }
            (Some(Event::Summary(_)) | None, _) => {}
        }
    }
    // The output written before the status lines and summary.
    drop(live);
    printer.finish();
    Ok(if printer.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A device's result in the collector's terms.
fn device_result(r: pb::DeviceResult) -> (Vec<CommandDone>, Option<DeviceError>) {
    let commands = r
        .commands
        .into_iter()
        .map(|c| CommandDone {
            command: c.command,
            output: c.output,
            stderr: c.stderr,
            exit_status: c.exit_status,
            duration_us: c.duration_us,
            error: Some(c.error).filter(|e| !e.is_empty()),
        })
        .collect();
    let error = Some(r.error)
        .filter(|e| !e.is_empty())
        .map(|message| DeviceError {
            code: r.error_code,
            message,
        });
    (commands, error)
}

/// Starts the call: `Exec`, or `ExecWithInput` fed from stdin.
async fn start(
    socket: &Path,
    args: &ExecArgs,
    devices: Vec<String>,
) -> Result<tonic::Streaming<pb::ExecEvent>, CliError> {
    let timeout_ms = args.exec.timeout()?.map_or(0, |t| t.as_millis() as u64);
    let request = pb::ExecRequest {
        service: named(&args.name),
        devices,
        commands: args.exec.commands.clone(),
        timeout_ms,
        max_output_bytes: args.max_output.unwrap_or(0),
        reset_before: args.reset_before,
        reset_after: args.reset_after,
    };
    let mut broker = broker_client(socket).await?;
    if !args.stdin {
        return Ok(broker.exec(request).await?.into_inner());
    }
    if request.devices.len() != 1 || request.commands.len() != 1 {
        return Err(CliError::Usage(
            "--stdin needs one device and one command".into(),
        ));
    }
    let first = pb::ExecInput {
        input: Some(pb::exec_input::Input::Start(request)),
    };
    let input = futures::stream::once(async { first }).chain(stdin_chunks());
    Ok(broker.exec_with_input(input).await?.into_inner())
}

/// This process's stdin as `ExecInput` data messages, ending at its end.
fn stdin_chunks() -> impl futures::Stream<Item = pb::ExecInput> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(tokio::io::stdin()), |stdin| async move {
        let mut stdin = stdin?;
        let mut buf = vec![0u8; STDIN_CHUNK];
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                let msg = pb::ExecInput {
                    input: Some(pb::exec_input::Input::Data(buf)),
                };
                Some((msg, Some(stdin)))
            }
        }
    })
}

/// `--raw`: one device, one command, ssh-like. Returns the command's exit
/// status as the process's; errors are the caller's to turn into 255.
async fn raw(socket: &Path, args: ExecArgs) -> Result<ExitCode, CliError> {
    let devices = args.exec.distinct_devices();
    if devices.len() != 1 || args.exec.commands.len() != 1 {
        return Err(CliError::Usage(
            "--raw needs one device and one command".into(),
        ));
    }
    let device = devices[0].clone();
    let mut events = start(socket, &args, devices).await?;
    let mut code = None;
    let mut failure = None;
    // Written by a thread while this one reads on (see `OutputWriter`).
    let out = OutputWriter::start();
    while let Some(event) = events.message().await? {
        use pb::exec_event::Event;
        match event.event {
            Some(Event::Output(o)) => out.write(o.stderr, o.data).await,
            Some(Event::DeviceResult(r)) => {
                if !r.error.is_empty() {
                    failure = Some(format!("error: {device}: {}", r.error));
                    code = Some(TRANSPORT_FAILURE);
                    continue;
                }
                for c in r.commands {
                    out.write(false, c.output.into()).await;
                    out.write(true, c.stderr.into()).await;
                    code = Some(if c.error.is_empty() {
                        c.exit_status.unwrap_or(0).min(255) as u8
                    } else {
                        let command = &args.exec.commands[0];
                        failure = Some(format!("error: {device}: {command}: {}", c.error));
                        TRANSPORT_FAILURE
                    });
                }
            }
            Some(Event::Summary(_)) | None => {}
        }
    }
    // The output first, then why it failed.
    out.finish();
    if let Some(failure) = failure {
        eprintln!("{failure}");
    }
    Ok(ExitCode::from(code.unwrap_or(TRANSPORT_FAILURE)))
}
