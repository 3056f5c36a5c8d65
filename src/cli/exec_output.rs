//! How exec results are shown: readable blocks on a terminal, or one JSON
//! object per device per line for scripts. Results arrive as events (output
//! chunks, command completions, device completions) from the broker or
//! from local drivers; [`ExecCollector`] assembles them per device.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{out, outln};
use crate::wire::messages::{CommandDone, Response};

/// What to run, shared by `switchyard exec` and `switchyard service exec`.
#[derive(Debug, Args)]
pub struct ExecOptions {
    /// Devices to run on (a device named twice runs and is reported once).
    #[arg(required = true)]
    pub devices: Vec<String>,
    /// Command to run (repeatable; run in order).
    #[arg(short = 'c', long = "command", required = true)]
    pub commands: Vec<String>,
    /// Per-command timeout in seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// One JSON object per device on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ExecOptions {
    /// The devices, each once, in the order first named. The service
    /// merges duplicates too; sending each once keeps the request small and
    /// the report's count right.
    pub fn distinct_devices(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.devices
            .iter()
            .filter(|d| seen.insert(d.as_str()))
            .cloned()
            .collect()
    }

    pub fn timeout(&self) -> Result<Option<Duration>, super::CliError> {
        self.timeout
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        super::CliError::Usage(
                            "--timeout must be a positive number of seconds".into(),
                        )
                    })
            })
            .transpose()
    }
}

/// One device's results.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub device: String,
    pub status: &'static str,
    /// Why the device failed as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The gRPC code name of `error` (`NOT_FOUND` for a device that does
    /// not exist or that the remote user may not use, `UNAVAILABLE` for
    /// one that cannot be reached, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    pub results: Vec<CommandReport>,
}

/// Why a device failed as a whole: its gRPC code name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    pub command: String,
    pub status: &'static str,
    pub output: String,
    pub exit_status: Option<u32>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const SUCCESS: &str = "success";
const FAILURE: &str = "failure";

impl DeviceReport {
    pub fn succeeded(&self) -> bool {
        self.status == SUCCESS
    }
}

#[derive(Default)]
struct Partial {
    outputs: Vec<Vec<u8>>,
    results: Vec<Option<CommandReport>>,
}

/// Assembles exec events into per-device reports.
pub struct ExecCollector {
    devices: Vec<String>,
    commands: Vec<String>,
    partial: Vec<Partial>,
}

impl ExecCollector {
    pub fn new(devices: Vec<String>, commands: Vec<String>) -> Self {
        let partial = devices
            .iter()
            .map(|_| Partial {
                outputs: vec![Vec::new(); commands.len()],
                results: vec![None; commands.len()],
            })
            .collect();
        Self {
            devices,
            commands,
            partial,
        }
    }

    pub fn output(&mut self, device: u32, command: u32, data: &[u8]) {
        if let Some(out) = self
            .partial
            .get_mut(device as usize)
            .and_then(|p| p.outputs.get_mut(command as usize))
        {
            out.extend_from_slice(data);
        }
    }

    /// A command finished; `tail` is the output not sent in chunks.
    pub fn command_done(&mut self, device: u32, done: CommandDone) {
        let Some(p) = self.partial.get_mut(device as usize) else {
            return;
        };
        let index = done.command as usize;
        let (Some(name), Some(buffer)) = (self.commands.get(index), p.outputs.get_mut(index))
        else {
            return;
        };
        buffer.extend_from_slice(&done.output);
        let output = String::from_utf8_lossy(&std::mem::take(buffer)).into_owned();
        let ok = done.error.is_none() && done.exit_status.unwrap_or(0) == 0;
        p.results[index] = Some(CommandReport {
            command: name.clone(),
            status: if ok { SUCCESS } else { FAILURE },
            output,
            exit_status: done.exit_status,
            duration_ms: done.duration_us as f64 / 1000.0,
            error: done.error,
        });
    }

    /// A device finished: its command results, or its failure. Returns the
    /// device's report.
    pub fn device_done(
        &mut self,
        device: u32,
        commands: Vec<CommandDone>,
        error: Option<DeviceError>,
    ) -> Option<DeviceReport> {
        for done in commands {
            self.command_done(device, done);
        }
        let name = self.devices.get(device as usize)?.clone();
        let p = std::mem::take(self.partial.get_mut(device as usize)?);
        let results: Vec<CommandReport> = p.results.into_iter().flatten().collect();
        let ok = error.is_none() && results.iter().all(|r| r.status == SUCCESS);
        Some(DeviceReport {
            device: name,
            status: if ok { SUCCESS } else { FAILURE },
            error_code: error.as_ref().map(|e| e.code.clone()),
            error: error.map(|e| e.message),
            results,
        })
    }

    /// Feeds a protocol event (local drivers produce these).
    pub fn feed(&mut self, event: Response) -> Option<DeviceReport> {
        match event {
            Response::ExecOutput {
                device,
                command,
                data,
            } => {
                self.output(device, command, &data);
                None
            }
            Response::ExecDevice {
                device,
                commands,
                error,
            } => self.device_done(
                device,
                commands,
                error.map(|e| DeviceError {
                    code: crate::api::convert::code_name(e.code).to_string(),
                    message: e.message,
                }),
            ),
            _ => None,
        }
    }
}

/// Prints reports as they arrive, with a progress bar on a terminal when
/// several devices are involved.
pub struct ExecPrinter {
    json: bool,
    total: usize,
    done: usize,
    failed: usize,
    progress: Option<ProgressBar>,
}

impl ExecPrinter {
    pub fn new(json: bool, total: usize) -> Self {
        let progress = (!json && total > 1 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} devices {msg}") {
                bar.set_style(style);
            }
            bar
        });
        Self {
            json,
            total,
            done: 0,
            failed: 0,
            progress,
        }
    }

    pub fn print(&mut self, report: &DeviceReport) {
        self.done += 1;
        self.failed += usize::from(!report.succeeded());
        if self.json {
            outln!("{}", serde_json::to_string(report).unwrap_or_default());
            return;
        }
        let text = render(report, self.done, self.total);
        match &self.progress {
            Some(bar) => {
                bar.suspend(|| out!("{text}"));
                bar.inc(1);
                if self.failed > 0 {
                    bar.set_message(format!("({} failed)", self.failed));
                }
            }
            None => out!("{text}"),
        }
    }

    /// Number of devices that failed so far.
    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
    }
}

fn render(report: &DeviceReport, done: usize, total: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let summary = match &report.error {
        Some(e) => format!("{FAILURE}: {e}"),
        None => report.status.to_string(),
    };
    let _ = writeln!(out, "=== {} [{done}/{total}] {summary}", report.device);
    for r in &report.results {
        let status = match (&r.error, r.exit_status) {
            (Some(e), _) => format!(" ({e})"),
            (None, Some(code)) if code != 0 => format!(" (exit status {code})"),
            _ => String::new(),
        };
        let _ = writeln!(out, "--- {}{} [{:.1} ms]", r.command, status, r.duration_ms);
        out.push_str(&r.output);
        if !r.output.is_empty() && !r.output.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
